//! Thumbnails of uploaded images, made on request with the `image` crate:
//! `scale` fits the image inside the requested box, `crop` fills the box and
//! cuts the overflow from the centre. Images are never enlarged.
//!
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#thumbnails>

use std::io::Cursor;

use image::imageops::FilterType;
use image::{DynamicImage, ImageFormat, ImageReader, Limits};

/// The largest thumbnail side served; larger requests are clamped.
pub const MAX_SIDE: u32 = 1600;

/// Decoding limits, so a small file cannot expand into gigabytes.
const MAX_DECODED_SIDE: u32 = 16_384;
const MAX_DECODE_ALLOC: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Scale,
    Crop,
}

#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    #[error("not an image this server can read: {0}")]
    Unreadable(#[from] image::ImageError),
    #[error("reading the image: {0}")]
    Io(#[from] std::io::Error),
}

/// A thumbnail of `bytes` (an image) no larger than `width`×`height`, and
/// its content type: JPEG for JPEG sources, PNG otherwise.
pub fn thumbnail(
    bytes: &[u8],
    width: u32,
    height: u32,
    method: Method,
) -> Result<(Vec<u8>, &'static str), ThumbnailError> {
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DECODED_SIDE);
    limits.max_image_height = Some(MAX_DECODED_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    let source_format = reader.format();
    let image = reader.decode()?;
    let (width, height) = (width.clamp(1, MAX_SIDE), height.clamp(1, MAX_SIDE));
    let resized = resize(&image, width, height, method);
    let (format, content_type) = match source_format {
        Some(ImageFormat::Jpeg) => (ImageFormat::Jpeg, "image/jpeg"),
        _ => (ImageFormat::Png, "image/png"),
    };
    let mut out = Cursor::new(Vec::new());
    resized.write_to(&mut out, format)?;
    Ok((out.into_inner(), content_type))
}

fn resize(image: &DynamicImage, width: u32, height: u32, method: Method) -> DynamicImage {
    let fits = image.width() <= width && image.height() <= height;
    match method {
        Method::Scale if fits => image.clone(),
        Method::Scale => image.resize(width, height, FilterType::Triangle),
        // Smaller than the box on both sides: nothing to crop or fill.
        Method::Crop if fits => image.clone(),
        Method::Crop => {
            image.resize_to_fill(width.min(image.width()), height.min(image.height()), FilterType::Triangle)
        }
    }
}

#[cfg(test)]
mod tests {
    use image::{ImageBuffer, Rgb};

    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = ImageBuffer::from_fn(width, height, |x, _| Rgb([(x % 256) as u8, 0, 0]));
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(image).write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn dimensions(bytes: &[u8]) -> (u32, u32) {
        let image = image::load_from_memory(bytes).unwrap();
        (image.width(), image.height())
    }

    #[test]
    fn scale_keeps_the_aspect_ratio_and_crop_fills_the_box() {
        let source = png(400, 200);
        let (scaled, content_type) = thumbnail(&source, 100, 100, Method::Scale).unwrap();
        assert_eq!((dimensions(&scaled), content_type), ((100, 50), "image/png"));
        let (cropped, _) = thumbnail(&source, 100, 100, Method::Crop).unwrap();
        assert_eq!(dimensions(&cropped), (100, 100));
    }

    #[test]
    fn small_images_are_not_enlarged() {
        let (same, _) = thumbnail(&png(32, 16), 640, 480, Method::Scale).unwrap();
        assert_eq!(dimensions(&same), (32, 16));
        let (same, _) = thumbnail(&png(32, 16), 640, 480, Method::Crop).unwrap();
        assert_eq!(dimensions(&same), (32, 16));
    }

    #[test]
    fn what_is_not_an_image_is_refused() {
        assert!(thumbnail(b"hello", 10, 10, Method::Scale).is_err());
        let mut truncated = png(64, 64);
        truncated.truncate(40);
        assert!(thumbnail(&truncated, 10, 10, Method::Scale).is_err());
    }
}
