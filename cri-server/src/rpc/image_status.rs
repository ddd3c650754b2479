//! `ImageStatus`: an absent image is an empty response, not an error (as the CRI requires).

use std::collections::HashMap;

use images::Images;
use proto::cri::{ImageStatusRequest, ImageStatusResponse};
use tonic::Status;

use crate::error::Error;
use crate::view::image::{required_image, to_cri_image};

/// Answers with the image, and with `verbose` its config and layers as JSON in `info["info"]`.
pub fn image_status(
    images: &Images,
    req: &ImageStatusRequest,
) -> Result<ImageStatusResponse, Status> {
    let name = required_image(req.image.as_ref(), "image.image")?;
    let Some(rec) = images.resolve(name) else {
        return Ok(ImageStatusResponse::default());
    };
    let mut info = HashMap::new();
    if req.verbose {
        let (_, raw) = images.config(&rec).map_err(Error::from)?;
        let config: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|e| Status::internal(format!("image config: {e}")))?;
        let doc = serde_json::json!({
            "imageSpec": config,
            "manifestDigest": rec.manifest_digest,
            "chainIDs": rec.chain_ids,
            "pulledAt": rec.pulled_at,
        });
        info.insert("info".to_string(), doc.to_string());
    }
    Ok(ImageStatusResponse {
        image: Some(to_cri_image(&rec)),
        info,
    })
}
