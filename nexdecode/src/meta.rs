//! CF metadata of the data variable: units, fill and missing values, packing, time units, calendar.

use std::fmt;
use std::path::Path;

use netcdf::{AttributeValue, Variable};

use crate::block::ValueRule;
use crate::calendar::Calendar;
use crate::error::DecodeError;

/// Storage type of the data variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// 32-bit float (`float`).
    F32,
    /// 64-bit float (`double`); decoded to f32.
    F64,
    /// 16-bit integer (`short`), usually packed with `scale_factor`/`add_offset`.
    I16,
    /// 32-bit integer (`int`).
    I32,
    /// 8-bit integer (`byte`).
    I8,
}

impl Dtype {
    /// The netCDF CDL name (`float`, `double`, `short`, `int`, `byte`).
    pub fn cdl_name(self) -> &'static str {
        match self {
            Dtype::F32 => "float",
            Dtype::F64 => "double",
            Dtype::I16 => "short",
            Dtype::I32 => "int",
            Dtype::I8 => "byte",
        }
    }

    /// Maps a libnetcdf type; `Err` carries a printable name of an unsupported type.
    pub(crate) fn from_nc(t: &netcdf::types::NcVariableType) -> Result<Dtype, String> {
        use netcdf::types::{FloatType, IntType, NcVariableType as T};
        match t {
            T::Float(FloatType::F32) => Ok(Dtype::F32),
            T::Float(FloatType::F64) => Ok(Dtype::F64),
            T::Int(IntType::I16) => Ok(Dtype::I16),
            T::Int(IntType::I32) => Ok(Dtype::I32),
            T::Int(IntType::I8) => Ok(Dtype::I8),
            T::Int(i) => Err(format!("{i:?}").to_ascii_lowercase()),
            T::String => Err("string".into()),
            T::Char => Err("char".into()),
            other => Err(format!("{other:?}")),
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cdl_name())
    }
}

/// The data variable and the CF metadata that decide how its values and times are read.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct VariableInfo {
    /// Variable name, e.g. `tasmax`.
    pub name: String,
    /// `units` attribute (e.g. `K`, `kg m-2 s-1`), if any.
    pub units: Option<String>,
    /// Storage type.
    pub dtype: Dtype,
    /// `_FillValue`, as stored (converted to f64).
    pub fill: Option<f64>,
    /// `missing_value` (scalar or list; its type may differ from the variable's).
    pub missing: Vec<f64>,
    /// `scale_factor`, if present.
    pub scale: Option<f64>,
    /// `add_offset`, if present.
    pub offset: Option<f64>,
    /// Calendar of the time coordinate (absent attribute = [`Calendar::Standard`]).
    pub calendar: Calendar,
    /// The time coordinate's `units` attribute, e.g. `days since 1850-01-01`.
    pub time_units: String,
    /// Names of the variable's dimensions, in order (time, lat, lon).
    pub dims: [String; 3],
    /// Lengths of those dimensions.
    pub shape: [usize; 3],
}

/// netCDF's default fill for `float`/`double` (`NC_FILL_FLOAT`/`NC_FILL_DOUBLE`), used as the fill
/// value of float variables without `_FillValue` (as netCDF4-python does).
pub const NC_DEFAULT_FILL: f64 = 9.969_209_968_386_869e36;

impl VariableInfo {
    /// The raw → clean rule both read paths apply: fill, missing and NaN become NaN, then
    /// `raw * scale + offset`.
    pub(crate) fn value_rule(&self) -> ValueRule {
        let fill = match (self.fill, self.dtype) {
            (Some(f), _) => Some(f as f32),
            (None, Dtype::F32 | Dtype::F64) => Some(NC_DEFAULT_FILL as f32),
            (None, _) => None,
        };
        ValueRule {
            fill,
            missing: self.missing.iter().map(|&m| m as f32).collect(),
            scale: self.scale.unwrap_or(1.0) as f32,
            offset: self.offset.unwrap_or(0.0) as f32,
        }
    }
}

/// A text attribute (`char` or NC_STRING; a list of strings is joined with spaces).
pub(crate) fn attr_text(var: &Variable<'_>, name: &str) -> Option<String> {
    match var.attribute_value(name)?.ok()? {
        AttributeValue::Str(s) => Some(s),
        AttributeValue::Strs(v) => Some(v.join(" ")),
        _ => None,
    }
}

/// A numeric attribute of any type as f64 values (empty when absent or not numeric).
pub(crate) fn attr_numbers(
    var: &Variable<'_>,
    name: &str,
    path: &Path,
) -> Result<Vec<f64>, DecodeError> {
    let Some(value) = var.attribute_value(name) else {
        return Ok(Vec::new());
    };
    let value = value.map_err(|e| {
        DecodeError::netcdf(path, format!("read attribute `{}:{name}`", var.name()), e)
    })?;
    Ok(numbers(value))
}

fn numbers(value: AttributeValue) -> Vec<f64> {
    use AttributeValue as A;
    match value {
        A::Uchar(x) => vec![f64::from(x)],
        A::Uchars(x) => x.into_iter().map(f64::from).collect(),
        A::Schar(x) => vec![f64::from(x)],
        A::Schars(x) => x.into_iter().map(f64::from).collect(),
        A::Ushort(x) => vec![f64::from(x)],
        A::Ushorts(x) => x.into_iter().map(f64::from).collect(),
        A::Short(x) => vec![f64::from(x)],
        A::Shorts(x) => x.into_iter().map(f64::from).collect(),
        A::Uint(x) => vec![f64::from(x)],
        A::Uints(x) => x.into_iter().map(f64::from).collect(),
        A::Int(x) => vec![f64::from(x)],
        A::Ints(x) => x.into_iter().map(f64::from).collect(),
        A::Ulonglong(x) => vec![x as f64],
        A::Ulonglongs(x) => x.into_iter().map(|v| v as f64).collect(),
        A::Longlong(x) => vec![x as f64],
        A::Longlongs(x) => x.into_iter().map(|v| v as f64).collect(),
        A::Float(x) => vec![f64::from(x)],
        A::Floats(x) => x.into_iter().map(f64::from).collect(),
        A::Double(x) => vec![x],
        A::Doubles(x) => x,
        // Some writers store numbers as text; accept those that parse.
        A::Str(s) => s
            .split([',', ' '])
            .filter_map(|t| t.trim().parse().ok())
            .collect(),
        A::Strs(v) => v.iter().filter_map(|t| t.trim().parse().ok()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(dtype: Dtype, fill: Option<f64>, missing: Vec<f64>) -> VariableInfo {
        VariableInfo {
            name: "v".into(),
            units: None,
            dtype,
            fill,
            missing,
            scale: None,
            offset: None,
            calendar: Calendar::Standard,
            time_units: "days since 1850-01-01".into(),
            dims: ["time".into(), "lat".into(), "lon".into()],
            shape: [1, 1, 1],
        }
    }

    #[test]
    fn double_missing_value_on_float_variable_matches() {
        // MANIFEST #5: _FillValue = 1e20f, missing_value = 1e20 (double).
        let rule = info(Dtype::F32, Some(f64::from(1e20f32)), vec![1e20]).value_rule();
        assert!(rule.apply(1e20f32).is_nan());
        assert_eq!(rule.apply(245.85289), 245.85289);
        assert!(rule.apply(f32::NAN).is_nan());
    }

    #[test]
    fn float_without_fill_uses_netcdf_default() {
        let rule = info(Dtype::F32, None, vec![]).value_rule();
        assert!(rule.apply(9.969_21e36_f32).is_nan());
        let rule = info(Dtype::I16, None, vec![]).value_rule();
        assert_eq!(rule.fill, None);
    }

    #[test]
    fn packed_short() {
        let mut i = info(Dtype::I16, Some(-32767.0), vec![]);
        i.scale = Some(0.01);
        i.offset = Some(273.15);
        let rule = i.value_rule();
        assert!(rule.apply(-32767.0).is_nan());
        assert!((rule.apply(1000.0) - 283.15).abs() < 1e-4);
    }

    #[test]
    fn numeric_attribute_forms() {
        assert_eq!(numbers(AttributeValue::Double(1e20)), vec![1e20]);
        assert_eq!(
            numbers(AttributeValue::Floats(vec![1.0, 2.0])),
            vec![1.0, 2.0]
        );
        assert_eq!(numbers(AttributeValue::Short(-32767)), vec![-32767.0]);
        assert_eq!(numbers(AttributeValue::Str("1e20".into())), vec![1e20]);
    }
}
