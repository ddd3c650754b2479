//! WebSocket channel protocols: `v1`–`v5.channel.k8s.io` (and `base64.` variants) for exec and
//! attach, `portforward.k8s.io` / `v4.channel.k8s.io` for port-forward.
