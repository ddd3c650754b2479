//! SPDY/3.1 as Kubernetes clients speak it (client-go's spdystream): frames, zlib header
//! blocks with the SPDY/3 dictionary, and sessions in server and client roles.
