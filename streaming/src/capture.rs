//! Reading tcpdump captures of streaming sessions (classic pcap, IPv4/TCP) back into the two
//! byte streams of the connection, so tests can decode a real client's frames and replay
//! them against berth.

use std::collections::BTreeMap;

/// The two directions of a recorded streaming connection, HTTP upgrade included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// What the client sent: the upgrade request, then its frames.
    pub client: Vec<u8>,
    /// What the server sent: the 101 response, then its frames.
    pub server: Vec<u8>,
}

/// TCP payloads by (source port, destination port), each keyed by sequence number (which
/// drops retransmissions).
type Flows = BTreeMap<(u16, u16), BTreeMap<u32, Vec<u8>>>;

fn u16_be(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn u32_at(b: &[u8], at: usize, little: bool) -> Option<u32> {
    let w: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if little {
        u32::from_le_bytes(w)
    } else {
        u32::from_be_bytes(w)
    })
}

fn tcp_flows(pcap: &[u8]) -> Result<Flows, String> {
    let truncated = || "truncated pcap".to_string();
    // Microsecond or nanosecond magic, written little-endian (else the file is big-endian).
    let magic = u32_at(pcap, 0, true).ok_or_else(truncated)?;
    let little = matches!(magic, 0xa1b2_c3d4 | 0xa1b2_3c4d);
    let link_header = match u32_at(pcap, 20, little).ok_or_else(truncated)? {
        0 => 4,    // BSD loopback
        1 => 14,   // Ethernet
        113 => 16, // Linux cooked
        276 => 20, // Linux cooked v2
        other => return Err(format!("unsupported pcap link type {other}")),
    };
    let mut flows = Flows::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let len = u32_at(pcap, at + 8, little).ok_or_else(truncated)? as usize;
        let packet = pcap.get(at + 16..at + 16 + len).ok_or_else(truncated)?;
        at += 16 + len;
        if let Some((key, seq, payload)) = tcp_segment(packet.get(link_header..).unwrap_or(&[])) {
            flows.entry(key).or_default().insert(seq, payload.to_vec());
        }
    }
    Ok(flows)
}

/// (ports, sequence number, payload) of an IPv4/TCP packet with data.
fn tcp_segment(ip: &[u8]) -> Option<((u16, u16), u32, &[u8])> {
    if ip.first()? >> 4 != 4 || *ip.get(9)? != 6 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16_be(ip, 2)?);
    let tcp = ip.get(ihl..total)?;
    let data_offset = usize::from(tcp.get(12)? >> 4) * 4;
    let payload = tcp.get(data_offset..)?;
    if payload.is_empty() {
        return None;
    }
    Some((
        (u16_be(tcp, 0)?, u16_be(tcp, 2)?),
        u32_at(tcp, 4, false)?,
        payload,
    ))
}

fn join(segments: &BTreeMap<u32, Vec<u8>>) -> Vec<u8> {
    // Order by offset from the first sequence number (robust to wrap-around).
    let Some(&first) = segments.keys().next() else {
        return Vec::new();
    };
    let mut ordered: Vec<_> = segments.iter().collect();
    ordered.sort_by_key(|(seq, _)| seq.wrapping_sub(first));
    ordered.into_iter().flat_map(|(_, p)| p.clone()).collect()
}

/// The connection whose client direction starts with the upgrade `POST`, reassembled.
pub fn read_pcap(pcap: &[u8]) -> Result<Capture, String> {
    let flows = tcp_flows(pcap)?;
    let (&(sport, dport), segments) = flows
        .iter()
        .find(|(_, s)| join(s).starts_with(b"POST "))
        .ok_or("no POST upgrade request in the capture")?;
    Ok(Capture {
        client: join(segments),
        server: flows.get(&(dport, sport)).map(join).unwrap_or_default(),
    })
}

/// Splits the HTTP head from the SPDY bytes behind it.
pub fn split_http(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    Some((std::str::from_utf8(&bytes[..end]).ok()?, &bytes[end..]))
}
