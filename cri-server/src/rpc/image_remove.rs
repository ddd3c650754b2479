//! `RemoveImage`: by ID, tag or digest; removing an absent image succeeds.

use images::Images;
use proto::cri::{RemoveImageRequest, RemoveImageResponse};
use tonic::Status;
use tracing::info;

use crate::error::Error;
use crate::view::image::required_image;

/// Removes the image and every layer snapshot and blob no other image uses.
pub async fn remove_image(
    images: &Images,
    req: &RemoveImageRequest,
) -> Result<RemoveImageResponse, Status> {
    let name = required_image(req.image.as_ref(), "image.image")?;
    if let Some(rec) = images.remove(name).await.map_err(Error::from)? {
        info!(image = name, image_id = %rec.id, "RemoveImage");
    }
    Ok(RemoveImageResponse {})
}
