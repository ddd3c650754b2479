//! `runtime.v1.ImageService`: routes each RPC to its module. Until the image store lands every
//! RPC answers `Unimplemented` naming itself.

use std::sync::Arc;

use proto::cri::{self, image_service_server::ImageService};
use tonic::{Request, Response, Status};

use crate::errors::{area, not_implemented};
use crate::state::DaemonState;

type Rpc<T> = Result<Response<T>, Status>;

/// The ImageService implementation.
#[derive(Debug, Clone)]
pub struct Images {
    _state: Arc<DaemonState>,
}

impl Images {
    pub fn new(state: Arc<DaemonState>) -> Images {
        Images { _state: state }
    }
}

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(
        &self,
        _: Request<cri::ListImagesRequest>,
    ) -> Rpc<cri::ListImagesResponse> {
        Err(not_implemented("ListImages", area::IMAGES))
    }

    async fn image_status(
        &self,
        _: Request<cri::ImageStatusRequest>,
    ) -> Rpc<cri::ImageStatusResponse> {
        Err(not_implemented("ImageStatus", area::IMAGES))
    }

    async fn pull_image(&self, _: Request<cri::PullImageRequest>) -> Rpc<cri::PullImageResponse> {
        Err(not_implemented("PullImage", area::IMAGES))
    }

    async fn remove_image(
        &self,
        _: Request<cri::RemoveImageRequest>,
    ) -> Rpc<cri::RemoveImageResponse> {
        Err(not_implemented("RemoveImage", area::IMAGES))
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Rpc<cri::ImageFsInfoResponse> {
        Err(not_implemented("ImageFsInfo", area::IMAGES))
    }
}
