//! Who may see and do what: the one mechanism.
//!
//! Every authenticated request resolves to an [`Actor`]. Handlers ask it for a
//! [`Permission`] (`actor.require(…)`, answering 403) and for a [`Scope`]; every scoped
//! query takes that scope and builds its visibility filter from it, so no handler writes
//! its own. Rows outside the scope are simply not found (404).

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::security::Who;

/// A granular function a manager may be granted.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    ViewCustomers,
    CreateCustomers,
    EditCustomers,
    RecordPayments,
    GenerateBills,
    ManageComplaints,
    ViewReports,
    SuspendReconnect,
    AddBalance,
    ViewInvoices,
    SendNotifications,
    ManageSites,
    ManageResellers,
    ManageStaff,
    ManageBranding,
    ViewAuditLog,
    ManagePlans,
    /// Messaging providers, templates and settings, and reading the delivery log.
    ManageMessaging,
}

impl Permission {
    pub const ALL: [Permission; 18] = [
        Permission::ViewCustomers,
        Permission::CreateCustomers,
        Permission::EditCustomers,
        Permission::RecordPayments,
        Permission::GenerateBills,
        Permission::ManageComplaints,
        Permission::ViewReports,
        Permission::SuspendReconnect,
        Permission::AddBalance,
        Permission::ViewInvoices,
        Permission::SendNotifications,
        Permission::ManageSites,
        Permission::ManageResellers,
        Permission::ManageStaff,
        Permission::ManageBranding,
        Permission::ViewAuditLog,
        Permission::ManagePlans,
        Permission::ManageMessaging,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ViewCustomers => "view_customers",
            Permission::CreateCustomers => "create_customers",
            Permission::EditCustomers => "edit_customers",
            Permission::RecordPayments => "record_payments",
            Permission::GenerateBills => "generate_bills",
            Permission::ManageComplaints => "manage_complaints",
            Permission::ViewReports => "view_reports",
            Permission::SuspendReconnect => "suspend_reconnect",
            Permission::AddBalance => "add_balance",
            Permission::ViewInvoices => "view_invoices",
            Permission::SendNotifications => "send_notifications",
            Permission::ManageSites => "manage_sites",
            Permission::ManageResellers => "manage_resellers",
            Permission::ManageStaff => "manage_staff",
            Permission::ManageBranding => "manage_branding",
            Permission::ViewAuditLog => "view_audit_log",
            Permission::ManagePlans => "manage_plans",
            Permission::ManageMessaging => "manage_messaging",
        }
    }
}

/// Named permission sets offered when creating a manager. Only a convenience: the
/// manager stores the resulting list, not the preset's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolePreset {
    /// Front-line support: look up, edit, suspend/reconnect, complaints.
    Support,
    /// Look, never touch.
    ReadOnly,
    /// Field collector: find customers and record what they paid.
    Collector,
}

impl RolePreset {
    pub const ALL: [RolePreset; 3] = [
        RolePreset::Support,
        RolePreset::ReadOnly,
        RolePreset::Collector,
    ];

    pub fn permissions(self) -> PermSet {
        use Permission::*;
        let list: &[Permission] = match self {
            RolePreset::Support => &[
                ViewCustomers,
                EditCustomers,
                SuspendReconnect,
                ManageComplaints,
                ViewInvoices,
            ],
            RolePreset::ReadOnly => &[ViewCustomers, ViewReports, ViewInvoices],
            RolePreset::Collector => &[ViewCustomers, RecordPayments, ViewInvoices],
        };
        PermSet(list.iter().copied().collect())
    }
}

/// A set of permissions. The empty set can do nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(value_type = Vec<Permission>)]
pub struct PermSet(pub BTreeSet<Permission>);

impl PermSet {
    pub fn all() -> PermSet {
        PermSet(Permission::ALL.into_iter().collect())
    }
    pub fn contains(&self, p: Permission) -> bool {
        self.0.contains(&p)
    }
    pub fn is_subset(&self, other: &PermSet) -> bool {
        self.0.is_subset(&other.0)
    }
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("permission set serializes")
    }
    /// Reads the stored JSON. An unreadable value grants nothing (secure by default).
    pub fn from_json(s: &str) -> PermSet {
        serde_json::from_str(s).unwrap_or_default()
    }
}

/// What kind of login a user is. The kind fixes the shape of the scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UserKind {
    /// Operator staff: the whole tree, every function.
    Operator,
    /// A reseller's own login: its tenant and all descendants, every function there.
    Reseller,
    /// Staff acting for one tenant: only that tenant's direct customers, and only the
    /// functions granted.
    Manager,
}

impl UserKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UserKind::Operator => "operator",
            UserKind::Reseller => "reseller",
            UserKind::Manager => "manager",
        }
    }
    pub fn parse(s: &str) -> Option<UserKind> {
        match s {
            "operator" => Some(UserKind::Operator),
            "reseller" => Some(UserKind::Reseller),
            "manager" => Some(UserKind::Manager),
            _ => None,
        }
    }
}

/// The tenant id of the operator (the root of the tree; created by the first migration).
pub const OPERATOR_TENANT: i64 = 1;

/// How a session was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Session { id: i64 },
    ApiToken { id: i64 },
}

/// The person (or script) behind a request.
#[derive(Debug, Clone)]
pub struct Actor {
    pub user_id: i64,
    pub name: String,
    pub email: String,
    pub kind: UserKind,
    pub tenant_id: i64,
    /// Materialized path of the actor's tenant, e.g. `/1/4/`.
    pub tenant_path: String,
    pub permissions: PermSet,
    /// The operator or reseller user who is acting as this user, if any.
    pub impersonator: Option<(i64, String)>,
    pub credential: Credential,
    pub ip: IpAddr,
    pub user_agent: String,
}

impl Actor {
    /// The effective permission set: kind-based for operator and reseller logins.
    pub fn can(&self, p: Permission) -> bool {
        match self.kind {
            UserKind::Operator | UserKind::Reseller => true,
            UserKind::Manager => self.permissions.contains(p),
        }
    }

    pub fn effective_permissions(&self) -> PermSet {
        match self.kind {
            UserKind::Operator | UserKind::Reseller => PermSet::all(),
            UserKind::Manager => self.permissions.clone(),
        }
    }

    /// 403 unless the actor holds at least one of `any`.
    pub fn require_any(&self, any: &[Permission]) -> Result<()> {
        if any.iter().any(|p| self.can(*p)) {
            return Ok(());
        }
        let names: Vec<&str> = any.iter().map(|p| p.as_str()).collect();
        Err(Error::forbidden(
            "permission_denied",
            format!(
                "your account lacks the permission: one of {}",
                names.join(", ")
            ),
        ))
    }

    /// 403 unless the actor holds `p`.
    pub fn require(&self, p: Permission) -> Result<()> {
        if self.can(p) {
            Ok(())
        } else {
            Err(Error::forbidden(
                "permission_denied",
                format!("your account lacks the '{}' permission", p.as_str()),
            ))
        }
    }

    pub fn is_operator_staff(&self) -> bool {
        self.kind == UserKind::Operator
    }

    pub fn scope(&self) -> Scope {
        match self.kind {
            UserKind::Operator | UserKind::Reseller => Scope::Subtree {
                tenant_id: self.tenant_id,
                path: self.tenant_path.clone(),
            },
            UserKind::Manager => Scope::Direct {
                tenant_id: self.tenant_id,
            },
        }
    }
}

/// The set of tenants whose rows an actor may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A tenant and all its descendants (operator staff: the root's subtree).
    Subtree { tenant_id: i64, path: String },
    /// Exactly one tenant: a manager sees only its tenant's direct customers.
    Direct { tenant_id: i64 },
}

impl Scope {
    pub fn tenant_id(&self) -> i64 {
        match self {
            Scope::Subtree { tenant_id, .. } | Scope::Direct { tenant_id } => *tenant_id,
        }
    }

    /// An SQL predicate over an owning-tenant column (`s.tenant_id`), with its one
    /// parameter. Use it for every row that names an owning tenant.
    pub fn owns(&self, column: &str) -> (String, rusqlite::types::Value) {
        use rusqlite::types::Value;
        match self {
            // The subtree as a range of the materialized path, not `path GLOB '/1/4/*'`:
            // SQLite re-prepares a statement whose GLOB pattern is a bound parameter every
            // time a value is bound (its prefix optimisation depends on the value), which
            // cost a renewal more than its commit. Paths are digits and '/', so the paths
            // under `/1/4/` are exactly those from `/1/4/` up to `/1/4/:` (':' sorts after
            // both). One parameter, used twice through the one-row subquery.
            Scope::Subtree { path, .. } => (
                format!(
                    "{column} IN (SELECT t_.id FROM tenants t_, (SELECT ? AS p_) \
                     WHERE t_.path >= p_ AND t_.path < p_ || ':')"
                ),
                Value::Text(path.clone()),
            ),
            Scope::Direct { tenant_id } => (format!("{column} = ?"), Value::Integer(*tenant_id)),
        }
    }

    /// An SQL predicate over a tenants-table alias selecting the reseller records the
    /// actor manages: strict descendants for a subtree (a reseller cannot edit itself),
    /// the direct children of its tenant for a manager.
    pub fn manages_tenant(&self, alias: &str) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        match self {
            Scope::Subtree { tenant_id, path } => (
                format!("({alias}.path GLOB ? AND {alias}.id <> ?)"),
                vec![Value::Text(format!("{path}*")), Value::Integer(*tenant_id)],
            ),
            Scope::Direct { tenant_id } => (
                format!("{alias}.parent_id = ?"),
                vec![Value::Integer(*tenant_id)],
            ),
        }
    }

    /// The scope over the rows owned by one tenant (with its descendants, for a subtree
    /// scope), if the actor may read those rows; `None` answers 404.
    ///
    /// This is narrower than [`Scope::manages_tenant`] on purpose: a manager may see and
    /// act on the reseller *records* of its tenant's direct children (they are that
    /// tenant's customers), but the rows those children own (their ledger, their
    /// subscribers' renewals, their revenue) belong to the children, and a manager's row
    /// scope is exactly its own tenant. Statements and reports take their scope from here,
    /// never from a scope built by the handler.
    pub fn narrowed_to(&self, tenant_id: i64, tenant_path: &str) -> Option<Scope> {
        if !self.may_assign_to(tenant_id, tenant_path) {
            return None;
        }
        Some(match self {
            Scope::Subtree { .. } => Scope::Subtree {
                tenant_id,
                path: tenant_path.to_string(),
            },
            Scope::Direct { .. } => Scope::Direct { tenant_id },
        })
    }

    /// Whether a tenant (by its path) may own rows the actor creates or moves: the
    /// actor's subtree for operator and reseller users, only its own tenant for a manager.
    pub fn may_assign_to(&self, tenant_id: i64, tenant_path: &str) -> bool {
        match self {
            Scope::Subtree { path, .. } => tenant_path.starts_with(path.as_str()),
            Scope::Direct { tenant_id: own } => *own == tenant_id,
        }
    }
}

impl From<&Actor> for Who {
    fn from(a: &Actor) -> Who {
        Who {
            user_id: Some(a.user_id),
            name: format!("{} <{}>", a.name, a.email),
            impersonator: a.impersonator.clone(),
            tenant_id: a.tenant_id,
            ip: a.ip.to_string(),
            user_agent: a.user_agent.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_plain_sets_and_nothing_is_granted_by_default() {
        assert!(PermSet::default().0.is_empty());
        assert_eq!(PermSet::from_json("garbage"), PermSet::default());
        let support = RolePreset::Support.permissions();
        assert!(support.contains(Permission::SuspendReconnect));
        assert!(!support.contains(Permission::ManageStaff));
        assert!(
            RolePreset::ReadOnly
                .permissions()
                .is_subset(&PermSet::all())
        );
        let json = RolePreset::Collector.permissions().to_json();
        assert_eq!(
            json,
            r#"["view_customers","record_payments","view_invoices"]"#
        );
    }

    #[test]
    fn assignment_stays_inside_the_subtree() {
        let reseller = Scope::Subtree {
            tenant_id: 4,
            path: "/1/4/".into(),
        };
        assert!(reseller.may_assign_to(4, "/1/4/"));
        assert!(reseller.may_assign_to(9, "/1/4/9/"));
        assert!(
            !reseller.may_assign_to(40, "/1/40/"),
            "a sibling with a longer id is not a child"
        );
        assert!(!reseller.may_assign_to(1, "/1/"));
        let manager = Scope::Direct { tenant_id: 4 };
        assert!(manager.may_assign_to(4, "/1/4/"));
        assert!(!manager.may_assign_to(9, "/1/4/9/"));
    }

    #[test]
    fn rows_of_a_child_tenant_are_outside_a_managers_scope() {
        let manager = Scope::Direct { tenant_id: 4 };
        assert_eq!(
            manager.narrowed_to(4, "/1/4/"),
            Some(Scope::Direct { tenant_id: 4 })
        );
        assert_eq!(manager.narrowed_to(9, "/1/4/9/"), None);
        let operator_manager = Scope::Direct { tenant_id: 1 };
        assert_eq!(operator_manager.narrowed_to(4, "/1/4/"), None);
        let reseller = Scope::Subtree {
            tenant_id: 4,
            path: "/1/4/".into(),
        };
        assert_eq!(
            reseller.narrowed_to(9, "/1/4/9/"),
            Some(Scope::Subtree {
                tenant_id: 9,
                path: "/1/4/9/".into()
            })
        );
        assert_eq!(reseller.narrowed_to(40, "/1/40/"), None);
        assert_eq!(reseller.narrowed_to(1, "/1/"), None);
    }

    #[test]
    fn permission_names_match_serde() {
        for p in Permission::ALL {
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
    }
}
