//! Job messages: the native JSON form and the old Django system's form, parsed and validated
//! into a [`JobSpec`]. Nothing outside the catalog, the variable allow-list and the bucket
//! allow-list gets through.
//!
//! Native:
//! ```json
//! {"dataset": "NEX-GDDP-CMIP6", "scenario": "ssp245", "model": "ACCESS-CM2", "year": 2050,
//!  "variables": ["tasmin", "tasmax", "pr"], "locations": "all", "update_existing": false}
//! ```
//! `locations` is `all` (default), `cities`, `cities:SOURCE`, `geojson:URL` or `boundary:URL`;
//! an optional `bucket` overrides the dataset's bucket (must be allowed).
//!
//! Old system:
//! ```json
//! {"dataset": "LOCA", "scenario_id": 3, "model_id": 5, "year": "2006",
//!  "import_geojson_url": null, "import_boundary_url": null, "update_existing": false}
//! ```
//! `scenario_id`/`model_id` are ids in this database; locations default to the `location`
//! table ("cities"), as the old `run_jobs` did.
//!
//! S3 event notifications (what S3 sends to SQS, also wrapped in an SNS notification): an
//! `ObjectCreated:*` record of one object, whose key is parsed with the dataset profiles
//! ([`nexdecode::dataset::FileKey`], [`Dataset::key_matches`]) into (dataset, variable,
//! scenario, model, year); the bucket must be allowed. The job ([`ObjectEvent::job`]) is that
//! data source, that one variable and the location source of `NEXINGEST_EVENT_LOCATIONS`,
//! read from exactly that key; its identity carries the object's ETag ([`SourceObject`]).
//! S3's `s3:TestEvent` parses as [`Message::S3TestEvent`] (the worker deletes it).

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

use crate::catalog::{self, Dataset};
use crate::config::{AwsConfig, valid_bucket_name};
use crate::error::JobError;

/// Largest message body accepted (SQS allows 256 KiB; jobs are tiny).
pub const MAX_BODY: usize = 16 * 1024;

/// Where a GeoJSON document comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// An S3 object of an allowed bucket.
    S3 {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// A local file (only from the command line, never from a message).
    File(PathBuf),
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Resource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Which cells a job loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationSource {
    /// Every data cell of the grid.
    All,
    /// Cells of the `location` table (all sources, or one).
    Cities(Option<String>),
    /// Cells nearest to the points of a GeoJSON FeatureCollection (imported as locations).
    GeoJson(Resource),
    /// Every cell a GeoJSON polygon boundary touches.
    Boundary(Resource),
}

impl fmt::Display for LocationSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocationSource::All => f.write_str("all"),
            LocationSource::Cities(None) => f.write_str("cities"),
            LocationSource::Cities(Some(s)) => write!(f, "cities:{s}"),
            LocationSource::GeoJson(r) => write!(f, "geojson:{r}"),
            LocationSource::Boundary(r) => write!(f, "boundary:{r}"),
        }
    }
}

impl LocationSource {
    /// Parses `all`, `cities[:SOURCE]`, `geojson:URL`, `boundary:URL`. With `local_files`,
    /// a non-URL argument is a local path (command line only).
    ///
    /// # Errors
    /// A reason, when the form is unknown or a URL is not allowed.
    pub fn parse(s: &str, aws: Option<&AwsConfig>, local_files: bool) -> Result<Self, String> {
        let s = s.trim();
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        match (kind.to_ascii_lowercase().as_str(), arg) {
            ("all", None) => Ok(LocationSource::All),
            ("cities", None) => Ok(LocationSource::Cities(None)),
            ("cities", Some(src)) if !src.is_empty() && src.len() <= 200 => {
                Ok(LocationSource::Cities(Some(src.to_owned())))
            }
            ("geojson", Some(u)) => Ok(LocationSource::GeoJson(resource(u, aws, local_files)?)),
            ("boundary", Some(u)) => Ok(LocationSource::Boundary(resource(u, aws, local_files)?)),
            _ => Err(format!(
                "locations {s:?}: expected all, cities, cities:SOURCE, geojson:URL or boundary:URL"
            )),
        }
    }
}

fn resource(u: &str, aws: Option<&AwsConfig>, local_files: bool) -> Result<Resource, String> {
    if u.contains("://") || !local_files {
        let (bucket, key) = parse_s3_url(u)?;
        match aws {
            Some(a) if a.bucket_allowed(&bucket) => Ok(Resource::S3 { bucket, key }),
            Some(_) => Err(format!(
                "URL {u:?}: bucket {bucket:?} is not on the allow-list"
            )),
            None => Err(format!("URL {u:?}: no bucket allow-list configured")),
        }
    } else {
        Ok(Resource::File(PathBuf::from(u)))
    }
}

/// Parses `s3://bucket/key` and the S3 https forms (`https://bucket.s3[.region].amazonaws.com/key`,
/// `https://s3[.-region].amazonaws.com/bucket/key`) into (bucket, key). Any other host, query
/// strings, fragments and `..` segments are refused.
///
/// # Errors
/// A reason, for every URL that is not one of those forms.
pub fn parse_s3_url(u: &str) -> Result<(String, String), String> {
    let bad = |why: &str| format!("URL {u:?} not allowed: {why}");
    if u.len() > 1024 {
        return Err(bad("too long"));
    }
    if u.contains(['?', '#']) || u.chars().any(|c| c.is_control() || c == ' ') {
        return Err(bad("query strings, fragments and spaces are not accepted"));
    }
    let (bucket, key) = if let Some(rest) = u.strip_prefix("s3://") {
        let (b, k) = rest.split_once('/').ok_or_else(|| bad("no key"))?;
        (b.to_owned(), k.to_owned())
    } else if let Some(rest) = u.strip_prefix("https://") {
        let (host, path) = rest.split_once('/').ok_or_else(|| bad("no path"))?;
        let host = host.to_ascii_lowercase();
        let is_s3_host = |h: &str| {
            h == "s3"
                || (h.starts_with("s3.") || h.starts_with("s3-"))
                    && h[3..]
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-')
        };
        let base = host
            .strip_suffix(".amazonaws.com")
            .ok_or_else(|| bad("only S3 hosts (*.amazonaws.com) are allowed"))?;
        if is_s3_host(base) {
            let (b, k) = path.split_once('/').ok_or_else(|| bad("no key"))?;
            (b.to_owned(), k.to_owned())
        } else if let Some((b, h)) = base.split_once(".s3") {
            let h = format!("s3{h}");
            if !is_s3_host(&h) && !h.starts_with("s3.") {
                return Err(bad("not an S3 host"));
            }
            (b.to_owned(), path.to_owned())
        } else {
            return Err(bad("not an S3 host"));
        }
    } else {
        return Err(bad("only s3:// and https:// S3 URLs are accepted"));
    };
    let key = percent_decode(&key).ok_or_else(|| bad("bad percent-encoding"))?;
    if !valid_bucket_name(&bucket) {
        return Err(bad("invalid bucket name"));
    }
    if key.is_empty() || key.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err(bad("empty key or relative segments"));
    }
    Ok((bucket, key))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .ok()
        .filter(|k| !k.chars().any(char::is_control))
}

/// A validated job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// Dataset.
    pub dataset: Dataset,
    /// Canonical scenario name.
    pub scenario: &'static str,
    /// Canonical model name.
    pub model: &'static str,
    /// Year (within the scenario's range).
    pub year: i32,
    /// Allow-listed variables, canonical spelling, no duplicates, request order.
    pub variables: Vec<&'static str>,
    /// Which cells.
    pub locations: LocationSource,
    /// Reload even when done.
    pub update_existing: bool,
    /// Bucket override (allowed).
    pub bucket: Option<String>,
    /// The S3 object an S3-event job reads (its one variable's file, exactly this key).
    pub object: Option<SourceObject>,
}

/// The S3 object behind an S3-event job, and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceObject {
    /// Bucket (allowed).
    pub bucket: String,
    /// Key (decoded).
    pub key: String,
    /// The variable the object holds.
    pub variable: &'static str,
    /// The object's ETag (quotes removed); S3's version id or event sequencer when the
    /// event carries no ETag.
    pub version: String,
    /// Size in bytes, as the event reported it.
    pub size: Option<u64>,
}

impl SourceObject {
    /// `s3://bucket/key#version`: ends the job's identity key, so one version of an object is
    /// processed once.
    pub fn identity(&self) -> String {
        format!("{}{}", self.identity_base(), self.version)
    }

    /// `s3://bucket/key#`: what every version's identity starts with.
    pub fn identity_base(&self) -> String {
        format!("s3://{}/{}#", self.bucket, self.key)
    }
}

/// An S3 `ObjectCreated` event of a dataset file, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    /// The object.
    pub object: SourceObject,
    /// `ObjectCreated:Put`, `ObjectCreated:CompleteMultipartUpload`, …
    pub event_name: String,
    /// When S3 saw the object created (ISO 8601), if the event says.
    pub event_time: Option<String>,
    /// Dataset.
    pub dataset: Dataset,
    /// Canonical scenario.
    pub scenario: &'static str,
    /// Canonical model.
    pub model: &'static str,
    /// Year.
    pub year: i32,
}

impl ObjectEvent {
    /// The job: this data source, the object's one variable, `locations`, read from exactly
    /// the event's bucket and key.
    pub fn job(&self, locations: LocationSource) -> JobSpec {
        JobSpec {
            dataset: self.dataset,
            scenario: self.scenario,
            model: self.model,
            year: self.year,
            variables: vec![self.object.variable],
            locations,
            update_existing: false,
            bucket: Some(self.object.bucket.clone()),
            object: Some(self.object.clone()),
        }
    }
}

impl JobSpec {
    /// `dataset/scenario/model/year`, the job's id in logs.
    pub fn id(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.dataset, self.scenario, self.model, self.year
        )
    }

    /// Builds and validates a job from names (CLI, native messages).
    ///
    /// # Errors
    /// `InvalidMessage` with the reason.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dataset: &str,
        scenario: &str,
        model: &str,
        year: i32,
        variables: &[String],
        locations: LocationSource,
        update_existing: bool,
        bucket: Option<String>,
        aws: Option<&AwsConfig>,
    ) -> Result<Self, JobError> {
        let inv = JobError::InvalidMessage;
        let d: Dataset = dataset.parse().map_err(inv)?;
        let (scenario, first, last) = d.scenario(scenario).ok_or_else(|| {
            let known: Vec<_> = d.scenarios().iter().map(|s| s.0).collect();
            inv(format!(
                "unknown scenario {scenario:?} for {d} (known: {})",
                known.join(", ")
            ))
        })?;
        let model = d
            .model(model)
            .ok_or_else(|| inv(format!("unknown model {model:?} for {d}")))?;
        if !(first..=last).contains(&year) {
            return Err(inv(format!(
                "year {year} out of range for {d} {scenario} ({first}-{last})"
            )));
        }
        let variables = validate_variables(variables)?;
        if let Some(b) = &bucket {
            match aws {
                Some(a) if a.bucket_allowed(b) => {}
                _ => return Err(inv(format!("bucket {b:?} is not on the allow-list"))),
            }
        }
        Ok(JobSpec {
            dataset: d,
            scenario,
            model,
            year,
            variables,
            locations,
            update_existing,
            bucket,
            object: None,
        })
    }

    /// The native message body of this job.
    pub fn to_native_json(&self) -> String {
        let mut v = serde_json::json!({
            "dataset": self.dataset.name(),
            "scenario": self.scenario,
            "model": self.model,
            "year": self.year,
            "variables": self.variables,
            "locations": self.locations.to_string(),
            "update_existing": self.update_existing,
        });
        if let Some(b) = &self.bucket {
            v["bucket"] = serde_json::Value::String(b.clone());
        }
        v.to_string()
    }
}

/// Validates a variable list: non-empty, allow-listed, no duplicates.
///
/// # Errors
/// `InvalidMessage` naming the offending variable.
pub fn validate_variables(vars: &[String]) -> Result<Vec<&'static str>, JobError> {
    if vars.is_empty() {
        return Err(JobError::InvalidMessage("no variables".into()));
    }
    let mut out = Vec::with_capacity(vars.len());
    for v in vars {
        let c = catalog::canonical_variable(v.trim()).ok_or_else(|| {
            let known: Vec<_> = catalog::VARIABLES.iter().map(|v| v.0).collect();
            JobError::InvalidMessage(format!(
                "variable {v:?} is not allowed (allowed: {})",
                known.join(", ")
            ))
        })?;
        if out.contains(&c) {
            return Err(JobError::InvalidMessage(format!(
                "variable {c} given twice"
            )));
        }
        out.push(c);
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NativeBody {
    dataset: String,
    scenario: String,
    model: String,
    year: YearField,
    #[serde(default)]
    variables: Option<Vec<String>>,
    #[serde(default)]
    locations: Option<String>,
    #[serde(default)]
    update_existing: bool,
    #[serde(default)]
    bucket: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyBody {
    dataset: Option<String>,
    scenario_id: i64,
    model_id: i64,
    year: YearField,
    #[serde(default)]
    import_geojson_url: Option<String>,
    #[serde(default)]
    import_boundary_url: Option<String>,
    #[serde(default)]
    update_existing: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum YearField {
    Int(i64),
    Str(String),
}

impl YearField {
    fn get(&self) -> Result<i32, JobError> {
        let y = match self {
            YearField::Int(i) => *i,
            YearField::Str(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| JobError::InvalidMessage(format!("year {s:?} is not a number")))?,
        };
        i32::try_from(y)
            .ok()
            .filter(|y| (1800..=2300).contains(y))
            .ok_or_else(|| JobError::InvalidMessage(format!("year {y} out of range")))
    }
}

/// An old-system job: ids still to be resolved against the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyJob {
    /// Dataset (the old system defaulted to NEX-GDDP).
    pub dataset: Dataset,
    /// `scenario.id`.
    pub scenario_id: i32,
    /// `climate_model.id`.
    pub model_id: i32,
    /// Year.
    pub year: i32,
    /// Locations (default: the `location` table).
    pub locations: LocationSource,
    /// Reload if done.
    pub update_existing: bool,
}

/// A parsed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Native form, fully validated.
    Native(JobSpec),
    /// Old form: validated except for the ids, which need the database.
    Legacy(LegacyJob),
    /// An S3 `ObjectCreated` event of a dataset file.
    S3Object(Box<ObjectEvent>),
    /// S3's `s3:TestEvent`, sent when a bucket's notifications are configured: no job.
    S3TestEvent,
}

/// Parses and validates a message body.
///
/// # Errors
/// `InvalidMessage` with a clear reason.
pub fn parse(body: &str, aws: &AwsConfig) -> Result<Message, JobError> {
    let inv = JobError::InvalidMessage;
    if body.len() > MAX_BODY {
        return Err(inv(format!(
            "body is {} bytes (max {MAX_BODY})",
            body.len()
        )));
    }
    let value: serde_json::Value =
        serde_json::from_str(body).map_err(|e| inv(format!("not JSON: {e}")))?;
    let obj = value
        .as_object()
        .ok_or_else(|| inv("not a JSON object".into()))?;
    // S3 → SNS → SQS: the S3 event is the notification's `Message`.
    if obj.get("Type").and_then(|t| t.as_str()) == Some("Notification")
        && let Some(inner) = obj.get("Message").and_then(|m| m.as_str())
        && obj.contains_key("TopicArn")
    {
        let inner: serde_json::Value = serde_json::from_str(inner)
            .map_err(|e| inv(format!("SNS notification: Message is not JSON: {e}")))?;
        return match inner.as_object() {
            Some(o) if is_s3_event(o) => parse_s3_event(o, aws),
            _ => Err(inv(
                "SNS notification whose Message is not an S3 event".into()
            )),
        };
    }
    if is_s3_event(obj) {
        return parse_s3_event(obj, aws);
    }
    if obj.contains_key("scenario_id") || obj.contains_key("model_id") {
        let b: LegacyBody =
            serde_json::from_value(value).map_err(|e| inv(format!("old-system message: {e}")))?;
        let dataset = match b.dataset.as_deref() {
            None => Dataset::NexGddp,
            Some(d) => d.parse().map_err(inv)?,
        };
        let id = |name: &str, v: i64| {
            i32::try_from(v)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| inv(format!("{name} {v} is not a valid id")))
        };
        let locations = match (b.import_geojson_url, b.import_boundary_url) {
            (Some(_), Some(_)) => {
                return Err(inv(
                    "import_geojson_url and import_boundary_url are exclusive".into(),
                ));
            }
            (Some(u), None) if !u.is_empty() => {
                LocationSource::GeoJson(resource(&u, Some(aws), false).map_err(inv)?)
            }
            (None, Some(u)) if !u.is_empty() => {
                LocationSource::Boundary(resource(&u, Some(aws), false).map_err(inv)?)
            }
            _ => LocationSource::Cities(None),
        };
        Ok(Message::Legacy(LegacyJob {
            dataset,
            scenario_id: id("scenario_id", b.scenario_id)?,
            model_id: id("model_id", b.model_id)?,
            year: b.year.get()?,
            locations,
            update_existing: b.update_existing,
        }))
    } else {
        let b: NativeBody =
            serde_json::from_value(value).map_err(|e| inv(format!("native message: {e}")))?;
        let locations = match &b.locations {
            None => LocationSource::All,
            Some(l) => LocationSource::parse(l, Some(aws), false).map_err(inv)?,
        };
        let vars = b.variables.unwrap_or_else(|| {
            catalog::DEFAULT_VARIABLES
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        });
        Ok(Message::Native(JobSpec::new(
            &b.dataset,
            &b.scenario,
            &b.model,
            b.year.get()?,
            &vars,
            locations,
            b.update_existing,
            b.bucket,
            Some(aws),
        )?))
    }
}

fn is_s3_event(obj: &serde_json::Map<String, serde_json::Value>) -> bool {
    obj.contains_key("Records") || obj.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent")
}

/// An S3 event notification: `s3:TestEvent`, or one `ObjectCreated` record of a dataset
/// file in an allowed bucket.
fn parse_s3_event(
    obj: &serde_json::Map<String, serde_json::Value>,
    aws: &AwsConfig,
) -> Result<Message, JobError> {
    let inv = JobError::InvalidMessage;
    if obj.get("Event").and_then(|e| e.as_str()) == Some("s3:TestEvent") {
        return Ok(Message::S3TestEvent);
    }
    let records = obj
        .get("Records")
        .and_then(|r| r.as_array())
        .ok_or_else(|| inv("S3 event: Records is not an array".into()))?;
    let [record] = records.as_slice() else {
        return Err(inv(format!(
            "S3 event with {} records (one per message expected)",
            records.len()
        )));
    };
    let field = |path: &[&str]| -> Option<&serde_json::Value> {
        path.iter().try_fold(record, |v, k| v.get(*k))
    };
    let text = |path: &[&str]| field(path).and_then(|v| v.as_str());
    if let Some(src) = text(&["eventSource"])
        && src != "aws:s3"
    {
        return Err(inv(format!("event source {src:?} is not aws:s3")));
    }
    let name = text(&["eventName"]).unwrap_or_default();
    if !name.starts_with("ObjectCreated:") {
        return Err(inv(format!(
            "S3 event {name:?} is not an ObjectCreated event"
        )));
    }
    let bucket = text(&["s3", "bucket", "name"])
        .ok_or_else(|| inv("S3 event without s3.bucket.name".into()))?;
    let raw_key = text(&["s3", "object", "key"])
        .ok_or_else(|| inv("S3 event without s3.object.key".into()))?;
    // Event keys are URL-encoded with `+` for spaces.
    let key = percent_decode(&raw_key.replace('+', " "))
        .ok_or_else(|| inv(format!("S3 event key {raw_key:?}: bad percent-encoding")))?;
    if !aws.bucket_allowed(bucket) {
        return Err(inv(format!(
            "s3://{bucket}/{key}: bucket {bucket:?} is not on the allow-list"
        )));
    }
    let version = ["eTag", "versionId", "sequencer"]
        .iter()
        .find_map(|k| text(&["s3", "object", k]).filter(|v| !v.is_empty()))
        .map(|v| v.trim_matches('"').to_owned())
        .ok_or_else(|| inv(format!("s3://{bucket}/{key}: event without an eTag")))?;
    let size = field(&["s3", "object", "size"]).and_then(|v| v.as_u64());
    let what = format!("s3://{bucket}/{key}");
    let fk = nexdecode::dataset::FileKey::parse(&key).ok_or_else(|| {
        inv(format!(
            "{what}: not a file of a known dataset (NEX-GDDP, LOCA, NEX-GDDP-CMIP6 file names)"
        ))
    })?;
    let dataset = fk.dataset;
    let (scenario, first, last) = dataset.scenario(&fk.scenario).ok_or_else(|| {
        inv(format!(
            "{what}: unknown {dataset} scenario {:?}",
            fk.scenario
        ))
    })?;
    let model = dataset
        .model(&fk.model)
        .ok_or_else(|| inv(format!("{what}: unknown {dataset} model {:?}", fk.model)))?;
    if !(first..=last).contains(&fk.year) {
        return Err(inv(format!(
            "{what}: year {} out of range for {dataset} {scenario} ({first}-{last})",
            fk.year
        )));
    }
    let variable = catalog::canonical_variable(&fk.variable)
        .ok_or_else(|| inv(format!("{what}: variable {:?} is not allowed", fk.variable)))?;
    if dataset
        .key_matches(&key, scenario, model, fk.year, variable)
        .is_none()
    {
        return Err(inv(format!(
            "{what}: does not follow the {dataset} key template (expected {})",
            dataset.key(scenario, model, fk.year, variable)
        )));
    }
    Ok(Message::S3Object(Box::new(ObjectEvent {
        object: SourceObject {
            bucket: bucket.to_owned(),
            key,
            variable,
            version,
            size,
        },
        event_name: name.to_owned(),
        event_time: text(&["eventTime"]).map(str::to_owned),
        dataset,
        scenario,
        model,
        year: fk.year,
    })))
}

/// Resolves an old-system job's ids against the database catalog.
///
/// # Errors
/// `InvalidMessage` for unknown ids, a model/scenario not in the dataset, or a year out of
/// range; database errors.
pub async fn resolve_legacy(
    client: &impl tokio_postgres::GenericClient,
    job: &LegacyJob,
) -> Result<JobSpec, JobError> {
    let row = client
        .query_opt(
            "SELECT (SELECT name FROM climate_model WHERE id = $1),
                    (SELECT name FROM scenario WHERE id = $2)",
            &[&job.model_id, &job.scenario_id],
        )
        .await?;
    let (model, scenario): (Option<String>, Option<String>) =
        row.map_or((None, None), |r| (r.get(0), r.get(1)));
    let model = model.ok_or_else(|| {
        JobError::InvalidMessage(format!("model_id {} does not exist", job.model_id))
    })?;
    let scenario = scenario.ok_or_else(|| {
        JobError::InvalidMessage(format!("scenario_id {} does not exist", job.scenario_id))
    })?;
    let vars: Vec<String> = catalog::DEFAULT_VARIABLES
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    JobSpec::new(
        job.dataset.name(),
        &scenario,
        &model,
        job.year,
        &vars,
        job.locations.clone(),
        job.update_existing,
        None,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws() -> AwsConfig {
        AwsConfig {
            endpoint_url: None,
            nex_gddp_bucket: "nasanex".into(),
            loca_bucket: "nasanex".into(),
            cmip6_bucket: "nex-gddp-cmip6".into(),
            allowed_buckets: ["nasanex", "nex-gddp-cmip6", "azavea-climate-sandbox"]
                .into_iter()
                .map(String::from)
                .collect(),
            timeouts: Default::default(),
            s3: Default::default(),
        }
    }

    fn reason(body: &str) -> String {
        match parse(body, &aws()) {
            Err(JobError::InvalidMessage(r)) => r,
            other => panic!("expected rejection of {body}, got {other:?}"),
        }
    }

    #[test]
    fn native_message_round_trips() {
        let m = parse(
            r#"{"dataset":"NEX-GDDP-CMIP6","scenario":"SSP245","model":"access-cm2","year":2050,"variables":["tasmin","pr"]}"#,
            &aws(),
        )
        .unwrap();
        let Message::Native(j) = m else { panic!() };
        assert_eq!(j.id(), "NEX-GDDP-CMIP6/ssp245/ACCESS-CM2/2050");
        assert_eq!(j.variables, ["tasmin", "pr"]);
        assert_eq!(j.locations, LocationSource::All);
        let again = parse(&j.to_native_json(), &aws()).unwrap();
        assert_eq!(again, Message::Native(j));
    }

    #[test]
    fn legacy_message_is_accepted() {
        let m = parse(
            r#"{"dataset":"LOCA","scenario_id":3,"model_id":5,"year":"2006","import_geojson_url":"https://s3.amazonaws.com/azavea-climate-sandbox/cities.geojson","import_boundary_url":null,"update_existing":true}"#,
            &aws(),
        )
        .unwrap();
        assert_eq!(
            m,
            Message::Legacy(LegacyJob {
                dataset: Dataset::Loca,
                scenario_id: 3,
                model_id: 5,
                year: 2006,
                locations: LocationSource::GeoJson(Resource::S3 {
                    bucket: "azavea-climate-sandbox".into(),
                    key: "cities.geojson".into()
                }),
                update_existing: true,
            })
        );
    }

    #[test]
    fn malformed_messages_are_rejected_with_a_reason() {
        assert!(reason("{").contains("not JSON"));
        assert!(reason("[1]").contains("not a JSON object"));
        assert!(
            reason(r#"{"dataset":"CMIP7","scenario":"x","model":"y","year":2000}"#)
                .contains("unknown dataset")
        );
        assert!(
            reason(r#"{"dataset":"NEX-GDDP","scenario":"rcp85","model":"CCSM4","year":1990}"#)
                .contains("out of range")
        );
        assert!(
            reason(r#"{"dataset":"NEX-GDDP","scenario":"rcp85","model":"Nope","year":2050}"#)
                .contains("unknown model")
        );
        assert!(reason(r#"{"dataset":"NEX-GDDP","scenario":"rcp85","model":"CCSM4","year":2050,"variables":["tasmin; drop table"]}"#).contains("not allowed"));
        assert!(reason(r#"{"dataset":"NEX-GDDP","scenario":"rcp85","model":"CCSM4","year":2050,"locations":"geojson:https://evil.example.com/x.geojson"}"#).contains("only S3 hosts"));
        assert!(reason(r#"{"dataset":"NEX-GDDP","scenario":"rcp85","model":"CCSM4","year":2050,"locations":"geojson:s3://other-bucket/x.geojson"}"#).contains("allow-list"));
        assert!(reason(r#"{"dataset":"NEX-GDDP","scenario":"rcp85","model":"CCSM4","year":2050,"locations":"geojson:/etc/passwd"}"#).contains("not allowed"));
        assert!(reason(r#"{"dataset":"NEX-GDDP","scenario":"rcp85","model":"CCSM4","year":2050,"table":"x"}"#).contains("unknown field"));
        assert!(
            reason(r#"{"dataset":"NEX-GDDP","scenario_id":1,"model_id":-1,"year":"2050"}"#)
                .contains("model_id")
        );
        assert!(
            reason(r#"{"dataset":"NEX-GDDP","scenario_id":1,"model_id":1,"year":"20x0"}"#)
                .contains("not a number")
        );
        assert!(reason(r#"{"dataset":"NEX-GDDP","scenario":"rcp85","model":"CCSM4","year":2050,"bucket":"elsewhere"}"#).contains("allow-list"));
    }

    #[test]
    fn s3_urls() {
        let ok = |u: &str| parse_s3_url(u).unwrap();
        assert_eq!(ok("s3://b-1/a/b.json"), ("b-1".into(), "a/b.json".into()));
        assert_eq!(
            ok("https://b-1.s3.amazonaws.com/a%20b.json"),
            ("b-1".into(), "a b.json".into())
        );
        assert_eq!(
            ok("https://b-1.s3.us-east-1.amazonaws.com/k"),
            ("b-1".into(), "k".into())
        );
        assert_eq!(
            ok("https://s3.amazonaws.com/b-1/k"),
            ("b-1".into(), "k".into())
        );
        assert_eq!(
            ok("https://s3-us-west-2.amazonaws.com/b-1/k"),
            ("b-1".into(), "k".into())
        );
        assert!(parse_s3_url("http://s3.amazonaws.com/b-1/k").is_err());
        assert!(parse_s3_url("https://s3.amazonaws.com.evil.com/b-1/k").is_err());
        assert!(parse_s3_url("https://s3.amazonaws.com/b-1/k?x=1").is_err());
        assert!(parse_s3_url("s3://b-1/../k").is_err());
    }

    fn s3_event(bucket: &str, key: &str, name: &str) -> String {
        serde_json::json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
            "eventTime": "2026-01-02T03:04:05.000Z", "eventName": name,
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "c",
                   "bucket": {"name": bucket, "arn": format!("arn:aws:s3:::{bucket}")},
                   "object": {"key": key, "size": 1234, "eTag": "0123abcd", "sequencer": "00A"}}
        }]})
        .to_string()
    }

    #[test]
    fn s3_object_created_events_become_one_variable_jobs() {
        let key =
            "NEX-GDDP/BCSD/rcp85/day/atmos/pr/r1i1p1/v1.0/pr_day_BCSD_rcp85_r1i1p1_CCSM4_2050.nc";
        let m = parse(&s3_event("nasanex", key, "ObjectCreated:Put"), &aws()).unwrap();
        let Message::S3Object(ev) = m else {
            panic!("{m:?}")
        };
        assert_eq!(
            (ev.dataset, ev.scenario, ev.model, ev.year),
            (Dataset::NexGddp, "rcp85", "CCSM4", 2050)
        );
        assert_eq!(ev.object.identity(), format!("s3://nasanex/{key}#0123abcd"));
        let job = ev.job(LocationSource::Cities(None));
        assert_eq!(job.variables, ["pr"]);
        assert_eq!(job.bucket.as_deref(), Some("nasanex"));
        assert_eq!(job.id(), "NEX-GDDP/rcp85/CCSM4/2050");
        assert!(!job.update_existing);

        // URL-encoded keys (`+` is a space, %2F a slash), CMIP6 version suffixes and grids.
        let k6 = "NEX-GDDP-CMIP6/CNRM-CM6-1/ssp245/r1i1p1f2/tas/tas_day_CNRM-CM6-1_ssp245_r1i1p1f2_gr_2050_v1.1.nc";
        let enc = k6.replace('/', "%2F");
        let Message::S3Object(ev) = parse(
            &s3_event(
                "nex-gddp-cmip6",
                &enc,
                "ObjectCreated:CompleteMultipartUpload",
            ),
            &aws(),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(ev.object.key, k6);
        assert_eq!((ev.model, ev.object.variable), ("CNRM-CM6-1", "tas"));

        // Wrapped in an SNS notification.
        let sns =
            serde_json::json!({"Type": "Notification", "TopicArn": "arn:aws:sns:us-east-1:1:t",
            "Message": s3_event("nasanex", key, "ObjectCreated:Copy")})
            .to_string();
        assert!(matches!(parse(&sns, &aws()).unwrap(), Message::S3Object(_)));
    }

    #[test]
    fn s3_test_events_and_bad_events() {
        let t = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-01-02T03:04:05.000Z","Bucket":"nasanex"}"#;
        assert_eq!(parse(t, &aws()).unwrap(), Message::S3TestEvent);
        let key =
            "NEX-GDDP/BCSD/rcp85/day/atmos/pr/r1i1p1/v1.0/pr_day_BCSD_rcp85_r1i1p1_CCSM4_2050.nc";
        assert!(reason(&s3_event("elsewhere", key, "ObjectCreated:Put")).contains("allow-list"));
        assert!(
            reason(&s3_event("nasanex", key, "ObjectRemoved:Delete"))
                .contains("not an ObjectCreated")
        );
        assert!(
            reason(&s3_event(
                "nasanex",
                "incoming/readme.txt",
                "ObjectCreated:Put"
            ))
            .contains("not a file of a known dataset")
        );
        assert!(
            reason(&s3_event(
                "nasanex",
                &key.replace("CCSM4", "Nope"),
                "ObjectCreated:Put"
            ))
            .contains("unknown NEX-GDDP model")
        );
        assert!(
            reason(&s3_event(
                "nasanex",
                &key.replace("2050", "1990"),
                "ObjectCreated:Put"
            ))
            .contains("out of range")
        );
        assert!(
            reason(&s3_event(
                "nasanex",
                &key.replace("/pr/", "/prx/").replace("pr_day", "secret_day"),
                "ObjectCreated:Put"
            ))
            .contains("not allowed")
        );
        assert!(
            reason(&s3_event(
                "nasanex",
                &format!("other/{key}"),
                "ObjectCreated:Put"
            ))
            .contains("key template")
        );
        let two = s3_event("nasanex", key, "ObjectCreated:Put").replace("}]}", "},{}]}");
        assert!(reason(&two).contains("2 records"));
    }
}
