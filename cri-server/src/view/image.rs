//! The CRI view of an image record (`Image`), shared by `ListImages` and `ImageStatus`, and
//! the image an `ImageSpec` names.

use images::ImageRecord;
use proto::cri::{Image, ImageSpec, Int64Value};
use tonic::Status;

/// The CRI view of an image record. The image's user becomes `uid` when numeric, `username`
/// otherwise (the group part of `user:group` is dropped, as kubelet expects).
pub fn to_cri_image(rec: &ImageRecord) -> Image {
    let user = rec.user.split(':').next().unwrap_or_default();
    let (uid, username) = match user.parse::<i64>() {
        Ok(n) => (Some(Int64Value { value: n }), String::new()),
        Err(_) => (None, user.to_string()),
    };
    Image {
        id: rec.id.clone(),
        repo_tags: rec.repo_tags.clone(),
        repo_digests: rec.repo_digests.clone(),
        size: rec.size,
        uid,
        username,
        spec: Some(ImageSpec {
            image: rec.id.clone(),
            ..Default::default()
        }),
        pinned: rec.pinned,
    }
}

/// The non-empty `image` of a request's `ImageSpec`, or InvalidArgument naming `field`.
pub fn required_image<'a>(spec: Option<&'a ImageSpec>, field: &str) -> Result<&'a str, Status> {
    match spec.map(|s| s.image.as_str()) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(Status::invalid_argument(format!("{field} is required"))),
    }
}
