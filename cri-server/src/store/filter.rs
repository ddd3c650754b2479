//! The filter parts the `List*` calls share over records: a wanted state and a label selector.

use std::collections::HashMap;

/// The filter parts pods and containers share: an optional wanted state, and labels that
/// must all be present with the same values.
pub fn state_and_labels_match(
    wanted_state: Option<i32>,
    state: i32,
    selector: &HashMap<String, String>,
    labels: &HashMap<String, String>,
) -> bool {
    wanted_state.is_none_or(|w| w == state)
        && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
