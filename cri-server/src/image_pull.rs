//! `PullImage`: validate the request, turn its `AuthConfig` into a credential, pull.

use images::{Credential, Images};
use proto::cri::{AuthConfig, PullImageRequest, PullImageResponse};
use tonic::Status;
use tracing::info;

use crate::errors;
use crate::image_list::required_image;

/// Pulls the requested image and answers with its image ID (the config digest).
pub async fn pull_image(
    images: &Images,
    req: &PullImageRequest,
) -> Result<PullImageResponse, Status> {
    let image = required_image(req.image.as_ref(), "image.image")?;
    let cred = credential(req.auth.as_ref())?;
    let started = std::time::Instant::now();
    let outcome = images
        .pull(image, cred.as_ref())
        .await
        .map_err(errors::image_status)?;
    info!(
        image,
        image_id = %outcome.image_id,
        layers_fetched = outcome.layers_fetched,
        bytes = outcome.bytes_fetched,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "PullImage"
    );
    Ok(PullImageResponse {
        image_ref: outcome.image_id,
    })
}

fn credential(auth: Option<&AuthConfig>) -> Result<Option<Credential>, Status> {
    let Some(a) = auth else { return Ok(None) };
    Credential::from_fields(
        &a.username,
        &a.password,
        &a.auth,
        &a.identity_token,
        &a.registry_token,
    )
    .map_err(|e| Status::invalid_argument(format!("auth: {e}")))
}
