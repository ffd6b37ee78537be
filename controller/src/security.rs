//! Who acted, and refusals worth recording. Both the audit log and the domain error
//! carry these, so they live apart from either (no module loop).

use serde_json::Value;

/// Who did something, as the audit log records it.
#[derive(Debug, Clone)]
pub struct Who {
    pub user_id: Option<i64>,
    pub name: String,
    pub impersonator: Option<(i64, String)>,
    /// The actor's tenant: used as the entry's tenant when the target has none.
    pub tenant_id: i64,
    pub ip: String,
    pub user_agent: String,
}

/// A refusal worth recording, carried on an error until the write helper logs it.
#[derive(Debug, Clone)]
pub struct SecurityEvent {
    pub who: Who,
    pub action: String,
    pub target_kind: Option<String>,
    pub target_id: Option<i64>,
    pub detail: Value,
}

impl SecurityEvent {
    pub fn new(who: impl Into<Who>, action: &str, detail: Value) -> SecurityEvent {
        SecurityEvent {
            who: who.into(),
            action: action.into(),
            target_kind: None,
            target_id: None,
            detail,
        }
    }
    pub fn target(mut self, kind: &str, id: i64) -> Self {
        self.target_kind = Some(kind.into());
        self.target_id = Some(id);
        self
    }
}
