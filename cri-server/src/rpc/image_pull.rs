//! `PullImage`: validate the request, turn its `AuthConfig` into a credential, pull.

use images::Credential;
use proto::cri::{AuthConfig, PullImageRequest, PullImageResponse};
use tonic::Status;
use tracing::info;

use crate::error::Error;
use crate::state::DaemonState;
use crate::view::image::required_image;

/// Pulls the requested image and answers with its image ID (the config digest); counts the
/// pull in the metrics.
pub async fn pull_image(
    state: &DaemonState,
    req: &PullImageRequest,
) -> Result<PullImageResponse, Status> {
    let image = required_image(req.image.as_ref(), "image.image")?;
    let cred = credential(req.auth.as_ref())?;
    let started = std::time::Instant::now();
    let pulled = state.images.pull(image, cred.as_ref()).await;
    runtime_core::memory::release_free_heap();
    let bytes = pulled.as_ref().map_or(0, |o| o.bytes_fetched);
    state
        .metrics
        .record_pull(pulled.is_ok(), bytes, started.elapsed());
    let outcome = pulled.map_err(Error::from)?;
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
