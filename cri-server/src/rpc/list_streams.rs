//! The streaming list RPCs (`StreamPodSandboxes`, `StreamContainers`, `StreamContainerStats`,
//! `StreamPodSandboxStats`, `StreamPodSandboxMetrics`, `StreamImages`; KEP-5825, kubelet's
//! `CRIListStreaming` gate): the same answer as the matching `List*` RPC, cut into responses
//! of at most [`CHUNK`] items so no message nears the gRPC size limit on a node with many pods.
//! Every item appears in exactly one response; the stream ends after the last one. An empty
//! list is one empty response, so a client always sees the stream complete with an answer.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::Status;

/// Items per streamed response.
pub const CHUNK: usize = 256;

/// A server stream of list chunks.
pub type ListStream<R> = Pin<Box<dyn Stream<Item = Result<R, Status>> + Send>>;

/// Cuts `items` into responses of at most [`CHUNK`] items, each made by `wrap`.
pub fn chunked<T, R>(items: Vec<T>, wrap: fn(Vec<T>) -> R) -> ListStream<R>
where
    T: Send + 'static,
    R: Send + 'static,
{
    Box::pin(tokio_stream::iter(
        chunks(items).into_iter().map(move |c| Ok(wrap(c))),
    ))
}

fn chunks<T>(items: Vec<T>) -> Vec<Vec<T>> {
    if items.is_empty() {
        return vec![Vec::new()];
    }
    let mut out = Vec::with_capacity(items.len().div_ceil(CHUNK));
    let mut it = items.into_iter().peekable();
    while it.peek().is_some() {
        out.push(it.by_ref().take(CHUNK).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_in_exactly_one_chunk_in_order() {
        for n in [1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 7] {
            let c = chunks((0..n).collect::<Vec<_>>());
            assert!(c.iter().all(|c| !c.is_empty() && c.len() <= CHUNK));
            assert_eq!(c.concat(), (0..n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn empty_list_is_one_empty_response() {
        assert_eq!(chunks::<u8>(Vec::new()), vec![Vec::<u8>::new()]);
    }
}
