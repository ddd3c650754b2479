//! `runtime.v1.ImageService`: routes each RPC to its module.

use std::sync::Arc;

use proto::cri::{self, image_service_server::ImageService};
use tonic::{Request, Response, Status};

use crate::rpc::list_streams::{ListStream, chunked};
use crate::rpc::{image_fs_info, image_list, image_pull, image_remove, image_status};
use crate::state::DaemonState;

type Rpc<T> = Result<Response<T>, Status>;

/// The ImageService implementation.
#[derive(Clone)]
pub struct ImageServer {
    state: Arc<DaemonState>,
}

impl ImageServer {
    pub fn new(state: Arc<DaemonState>) -> ImageServer {
        ImageServer { state }
    }
}

#[tonic::async_trait]
impl ImageService for ImageServer {
    async fn list_images(
        &self,
        r: Request<cri::ListImagesRequest>,
    ) -> Rpc<cri::ListImagesResponse> {
        Ok(Response::new(image_list::list_images(
            &self.state.images,
            r.get_ref(),
        )))
    }

    async fn image_status(
        &self,
        r: Request<cri::ImageStatusRequest>,
    ) -> Rpc<cri::ImageStatusResponse> {
        image_status::image_status(&self.state.images, r.get_ref()).map(Response::new)
    }

    async fn pull_image(&self, r: Request<cri::PullImageRequest>) -> Rpc<cri::PullImageResponse> {
        image_pull::pull_image(&self.state, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn remove_image(
        &self,
        r: Request<cri::RemoveImageRequest>,
    ) -> Rpc<cri::RemoveImageResponse> {
        image_remove::remove_image(&self.state.images, r.get_ref())
            .await
            .map(Response::new)
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> Rpc<cri::ImageFsInfoResponse> {
        Ok(Response::new(
            image_fs_info::image_fs_info(&self.state).await,
        ))
    }

    type StreamImagesStream = ListStream<cri::StreamImagesResponse>;

    async fn stream_images(
        &self,
        r: Request<cri::StreamImagesRequest>,
    ) -> Rpc<Self::StreamImagesStream> {
        let list = image_list::list_images(
            &self.state.images,
            &cri::ListImagesRequest {
                filter: r.into_inner().filter,
            },
        );
        Ok(Response::new(chunked(list.images, |images| {
            cri::StreamImagesResponse { images }
        })))
    }
}
