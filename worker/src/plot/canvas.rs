//! An RGB image that plotters draws on, with text from a built-in 8×8 bitmap font and PNG
//! output: no system fonts, no font parsing, no image crate.
//!
//! plotters (without its default features) computes the layout — axes, ticks, labels, series
//! — and calls [`CanvasBackend`] for pixels and text; [`CanvasBackend`] draws text itself
//! (`font8x8`, scaled to the requested size), so the labels are real pixels.

use std::error::Error;
use std::fmt;

use plotters::prelude::{DrawingBackend, IntoDrawingArea};
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind, FontTransform,
};

/// An RGB8 image.
#[derive(Debug, Clone)]
pub struct Canvas {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Canvas {
    /// A canvas filled with `background`.
    ///
    /// # Panics
    /// When a side is 0 or the image would exceed 2^28 pixels.
    pub fn new(width: u32, height: u32, background: [u8; 3]) -> Self {
        assert!(width > 0 && height > 0, "empty canvas");
        let n = (width as usize)
            .checked_mul(height as usize)
            .filter(|n| *n <= 1 << 28)
            .expect("canvas too large");
        let mut rgb = Vec::with_capacity(n * 3);
        for _ in 0..n {
            rgb.extend_from_slice(&background);
        }
        Canvas { width, height, rgb }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// The pixel at `(x, y)`.
    ///
    /// # Panics
    /// Outside the image.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Sets a pixel (ignored outside the image).
    pub fn set(&mut self, x: i32, y: i32, c: [u8; 3]) {
        self.blend(x, y, c, 1.0);
    }

    /// Blends `c` with opacity `alpha` over a pixel (ignored outside the image).
    pub fn blend(&mut self, x: i32, y: i32, c: [u8; 3], alpha: f64) {
        if x < 0 || y < 0 || x as u32 >= self.width || y as u32 >= self.height || alpha <= 0.0 {
            return;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        if alpha >= 1.0 {
            self.rgb[i..i + 3].copy_from_slice(&c);
        } else {
            for (px, new) in self.rgb[i..i + 3].iter_mut().zip(c) {
                let old = f64::from(*px);
                *px = (old + (f64::from(new) - old) * alpha).round() as u8;
            }
        }
    }

    /// Draws `text` with its top-left corner at `(x, y)`, each font pixel `scale` pixels wide.
    pub fn text(&mut self, x: i32, y: i32, text: &str, scale: i32, c: [u8; 3]) {
        for_each_text_pixel(text, scale, |gx, gy| self.set(x + gx, y + gy, c));
    }

    /// Encodes the image as PNG.
    ///
    /// # Errors
    /// Encoder errors (none expected for an in-memory image).
    pub fn to_png(&self) -> Result<Vec<u8>, png::EncodingError> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, self.width, self.height);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header()?;
            w.write_image_data(&self.rgb)?;
            w.finish()?;
        }
        Ok(out)
    }

    /// A plotters drawing area over the whole canvas.
    pub fn area(
        &mut self,
    ) -> plotters::drawing::DrawingArea<CanvasBackend<'_>, plotters::coord::Shift> {
        CanvasBackend { canvas: self }.into_drawing_area()
    }
}

/// Width of a glyph cell of the font, in font pixels.
pub const GLYPH: i32 = 8;

/// Calls `f(x, y)` for every set pixel of `text` rendered at `scale` with its top-left at
/// `(0, 0)`; characters outside ASCII are drawn as `?`.
fn for_each_text_pixel(text: &str, scale: i32, mut f: impl FnMut(i32, i32)) {
    let scale = scale.max(1);
    for (n, ch) in text.chars().enumerate() {
        let code = if ch.is_ascii() {
            ch as usize
        } else {
            b'?' as usize
        };
        let glyph = font8x8::legacy::BASIC_LEGACY[code];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) != 0 {
                    let x0 = (n as i32 * GLYPH + col) * scale;
                    let y0 = row as i32 * scale;
                    for dy in 0..scale {
                        for dx in 0..scale {
                            f(x0 + dx, y0 + dy);
                        }
                    }
                }
            }
        }
    }
}

/// The font scale for a plotters font size (pixels): 8 px per font scale unit, at least 1.
pub fn scale_for(size: f64) -> i32 {
    ((size / 9.0).round() as i32).max(1)
}

/// Size of `text` at `scale`: (width, height) in pixels.
pub fn text_size(text: &str, scale: i32) -> (u32, u32) {
    let n = text.chars().count() as u32;
    (n * GLYPH as u32 * scale as u32, GLYPH as u32 * scale as u32)
}

/// The error type of [`CanvasBackend`] (drawing into memory does not fail).
#[derive(Debug)]
pub struct CanvasError;

impl fmt::Display for CanvasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("canvas error")
    }
}

impl Error for CanvasError {}

/// plotters' view of a [`Canvas`].
#[derive(Debug)]
pub struct CanvasBackend<'a> {
    canvas: &'a mut Canvas,
}

impl DrawingBackend for CanvasBackend<'_> {
    type ErrorType = CanvasError;

    fn get_size(&self) -> (u32, u32) {
        (self.canvas.width, self.canvas.height)
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<CanvasError>> {
        Ok(())
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<CanvasError>> {
        Ok(())
    }

    fn draw_pixel(
        &mut self,
        (x, y): BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<CanvasError>> {
        let (r, g, b) = color.rgb;
        self.canvas.blend(x, y, [r, g, b], color.alpha);
        Ok(())
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<CanvasError>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let scale = scale_for(style.size());
        let (w, h) = text_size(text, scale);
        let (w, h) = (w as i32, h as i32);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0,
            HPos::Right => -w,
            HPos::Center => -w / 2,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        };
        let trans: FontTransform = style.transform();
        let (r, g, b) = color.rgb;
        for_each_text_pixel(text, scale, |x, y| {
            let (x, y) = trans.transform(x + dx, y + dy);
            self.canvas
                .blend(pos.0 + x, pos.1 + y, [r, g, b], color.alpha);
        });
        Ok(())
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<CanvasError>> {
        Ok(text_size(text, scale_for(style.size())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_drawn_in_its_box() {
        let mut c = Canvas::new(40, 20, [255, 255, 255]);
        c.text(2, 3, "Hi", 2, [0, 0, 0]);
        let (w, h) = text_size("Hi", 2);
        assert_eq!((w, h), (32, 16));
        let mut dark = 0;
        for y in 0..20 {
            for x in 0..40 {
                if c.pixel(x, y) == [0, 0, 0] {
                    dark += 1;
                    assert!(
                        (2..2 + w).contains(&x) && (3..3 + h).contains(&y),
                        "({x},{y})"
                    );
                }
            }
        }
        assert!(dark > 20, "{dark} pixels");
    }

    #[test]
    fn png_round_trips() {
        let mut c = Canvas::new(7, 5, [10, 20, 30]);
        c.set(6, 4, [200, 100, 0]);
        c.blend(0, 0, [110, 20, 30], 0.5);
        let png = c.to_png().unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(png));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (7, 5));
        assert_eq!(&buf[..3], &[60, 20, 30]);
        assert_eq!(&buf[buf.len() - 3..], &[200, 100, 0]);
    }
}
