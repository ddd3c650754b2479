//! berth's image store: pulls from registries, content-addressed blobs, layer snapshots keyed
//! by chain ID, and image metadata.
//!
//! Empty until the image service issue lands; `cri-server` answers the ImageService RPCs with
//! `Unimplemented` meanwhile.
