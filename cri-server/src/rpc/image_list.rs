//! `ListImages`.

use images::Images;
use proto::cri::{ListImagesRequest, ListImagesResponse};

use crate::view::image::to_cri_image;

/// Lists every image, or the one the filter's `image.image` names (none if it names nothing).
pub fn list_images(images: &Images, req: &ListImagesRequest) -> ListImagesResponse {
    let wanted = req
        .filter
        .as_ref()
        .and_then(|f| f.image.as_ref())
        .map(|s| s.image.as_str())
        .filter(|s| !s.is_empty());
    let records = match wanted {
        Some(name) => images.resolve(name).into_iter().collect(),
        None => images.list(),
    };
    ListImagesResponse {
        images: records.iter().map(to_cri_image).collect(),
    }
}
