//! Text in images without system fonts: a fresh machine or a CI container may have no
//! fontconfig and no TTF files, so glyphs come from the embedded 8x8 bitmap font of the
//! `font8x8` crate, drawn by this small blitter.

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

/// Draws `text` with its top-left corner at (x, y), each font pixel `scale` pixels wide.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, color: Rgb<u8>) {
    let mut cx = x;
    for ch in text.chars() {
        let glyph = font8x8::BASIC_FONTS.get(ch).unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale as i64 {
                    for dx in 0..scale as i64 {
                        let px = cx + col as i64 * scale as i64 + dx;
                        let py = y + row as i64 * scale as i64 + dy;
                        if px >= 0
                            && py >= 0
                            && (px as u32) < img.width()
                            && (py as u32) < img.height()
                        {
                            img.put_pixel(px as u32, py as u32, color);
                        }
                    }
                }
            }
        }
        cx += 8 * scale as i64;
    }
}

/// Width in pixels of `text` drawn at `scale`.
pub fn text_width(text: &str, scale: u32) -> u32 {
    text.chars().count() as u32 * 8 * scale
}
