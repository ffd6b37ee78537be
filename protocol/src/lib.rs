//! The contract between an Outpost agent and its controller.
//!
//! Agents initiate everything, over their WireGuard tunnel:
//!
//! 1. [`EnrollRequest`] to [`paths::ENROLL`] with a single-use token, once.
//! 2. A long poll of [`paths::STATE`] (`?since=REV&wait=SECONDS`) returning a
//!    [`StateResponse`]: a full snapshot, or the changes since `since`.
//! 3. [`Ack`] to [`paths::ACK`] with the revision applied and a digest of what the
//!    agent actually enforces.
//! 4. [`EventBatch`] to [`paths::EVENTS`]: journaled events with per-agent sequence
//!    numbers; the controller stores each (agent, seq) once.
//! 5. Key rotation, make before break: [`RotateKey`] to [`paths::ROTATE`] from the
//!    agent's tunnel address gets a second overlay address and preshared key for the
//!    new key ([`TunnelParams`]); the agent brings up a second interface with them,
//!    moves its calls to it once it has a handshake, and sends the same [`RotateKey`]
//!    to [`paths::ROTATE_CONFIRM`] from the new address; only then does the
//!    controller drop the old key's peer and address.
//!
//! Every call after enrollment carries `Authorization: Bearer <EnrollResponse::credential>`
//! and the header [`PROTOCOL_HEADER`]. Times are unix seconds (UTC). This crate holds
//! only types: no I/O, no HTTP framework, no database.

#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

/// The version of this contract. A controller refuses agents speaking another one.
pub const PROTOCOL_VERSION: u32 = 1;

/// Header naming the protocol version on every agent call.
pub const PROTOCOL_HEADER: &str = "x-outpost-protocol";

/// The controller's agent endpoints.
pub mod paths {
    /// `POST`: [`super::EnrollRequest`] → [`super::EnrollResponse`].
    pub const ENROLL: &str = "/agent/v1/enroll";
    /// `GET ?since=REV&wait=SECONDS` → [`super::StateResponse`].
    pub const STATE: &str = "/agent/v1/state";
    /// `POST`: [`super::Ack`] → 204.
    pub const ACK: &str = "/agent/v1/ack";
    /// `POST`: [`super::EventBatch`] → [`super::EventsAccepted`].
    pub const EVENTS: &str = "/agent/v1/events";
    /// `POST`: [`super::RotateKey`] → [`super::TunnelParams`] for the new key (the same
    /// answer again when the same key is presented twice).
    pub const ROTATE: &str = "/agent/v1/rotate-key";
    /// `POST`: [`super::RotateKey`] from the new key's address → 204; the old key is
    /// gone. Repeating it after it succeeded is no error.
    pub const ROTATE_CONFIRM: &str = "/agent/v1/rotate-key/confirm";
}

/// The longest long-poll wait the controller honours, in seconds.
pub const MAX_WAIT_SECS: u32 = 60;

/// The most events one batch may carry (the OpenAPI schema of [`EventBatch`] says 1000
/// too; a test holds them together).
pub const MAX_BATCH: usize = 1000;

/// First contact: trade a single-use enrollment token for an identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The token shown once when the site's enrollment token was created.
    pub token: String,
    /// The agent's WireGuard public key (base64, 32 bytes).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")
    )]
    pub wireguard_public_key: String,
    /// The agent's host name, so the operator can tell boxes apart in the site's agent list.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[!-~]{1,253}$"))]
    pub hostname: String,
    /// The agent's own version string.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub agent_version: String,
    /// [`PROTOCOL_VERSION`] of the agent.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1))]
    pub protocol_version: u32,
}

/// The agent's identity and what it needs to reach the controller from now on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrollResponse {
    /// The agent's id at the controller; it names the agent in logs and in the site's agent list.
    pub agent_id: i64,
    /// The site this agent serves: the controller sends it this site's state only.
    pub site_id: i64,
    /// Bearer secret for every later call. Shown once; the controller keeps a hash.
    pub credential: String,
    /// How to bring up the WireGuard tunnel every later call goes through. Absent when
    /// the controller runs without a management tunnel (a lab or a trusted network):
    /// the agent then calls the URL it enrolled at.
    #[serde(default)]
    pub tunnel: Option<TunnelParams>,
    /// The controller's [`PROTOCOL_VERSION`], so an agent can tell it is talking to an older or newer contract.
    pub protocol_version: u32,
}

/// WireGuard parameters for the agent's tunnel to the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TunnelParams {
    /// The agent's tunnel address with prefix, e.g. `10.66.0.7/32`.
    pub address: String,
    /// The controller's WireGuard public key (base64).
    pub controller_public_key: String,
    /// `host:port` of the controller's WireGuard endpoints, in the order to try them.
    pub controller_endpoints: Vec<String>,
    /// The controller's address inside the tunnel, where the agent API answers.
    pub controller_address: String,
    /// The TCP port of the agent API at `controller_address`.
    pub api_port: u16,
    /// PersistentKeepalive for the controller peer: keeps the NAT mapping of a site behind CGNAT open.
    pub persistent_keepalive_secs: u16,
    /// The preshared key of this agent's peer (base64): a second, symmetric layer on the
    /// handshake. Shown once, like the credential.
    pub preshared_key: String,
}

impl TunnelParams {
    /// Base URL of the agent API inside the tunnel.
    pub fn api_url(&self) -> String {
        format!("http://{}:{}", self.controller_address, self.api_port)
    }
}

/// Body of [`paths::ROTATE`] and [`paths::ROTATE_CONFIRM`]: the agent's new key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// The new WireGuard public key (base64, 32 bytes); its private half never leaves
    /// the agent.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$")
    )]
    pub new_public_key: String,
}

/// Query of [`paths::STATE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StateQuery {
    /// The revision the agent has applied; 0 asks for a snapshot.
    pub since: u64,
    /// Seconds to wait for a change when there is none (0..=[`MAX_WAIT_SECS`]).
    #[serde(default)]
    pub wait: u32,
}

/// Whether a [`StateResponse`] replaces the agent's state or patches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// Everything the site enforces: replace the local state whole.
    Snapshot,
    /// Only what changed since `since`: upsert the listed rows, delete the removed ones.
    Delta,
    /// Nothing changed within the wait.
    Unchanged,
}

/// The site's desired state at `revision`, whole or as a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StateResponse {
    /// Whether to replace the local state whole, patch it, or leave it.
    pub kind: StateKind,
    /// Apply, then acknowledge this revision.
    #[cfg_attr(feature = "openapi", schema(maximum = 9223372036854775807_u64))]
    pub revision: u64,
    #[serde(default)]
    /// Subscribers to upsert (all of them in a snapshot), by [`SubscriberState::id`].
    pub subscribers: Vec<SubscriberState>,
    /// Subscriber ids no longer served by this site.
    #[serde(default)]
    pub removed_subscribers: Vec<i64>,
    #[serde(default)]
    /// NAS clients to upsert (all of them in a snapshot), by [`NasState::id`].
    pub nas: Vec<NasState>,
    /// NAS ids no longer at this site.
    #[serde(default)]
    pub removed_nas: Vec<i64>,
    /// Present in snapshots and when the settings changed.
    #[serde(default)]
    pub settings: Option<SiteSettings>,
    /// The brand shown to each owning reseller's subscribers on the suspended page: all
    /// of them in a snapshot, the changed ones in a delta.
    #[serde(default)]
    pub brands: Vec<Brand>,
    /// The notices for this site's subscribers that have not ended, whole: present in
    /// snapshots and deltas from controllers that have notices. Absent (an older
    /// controller, or an `unchanged` answer): keep the notices held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notices: Option<Vec<Notice>>,
}

/// A notice staff posted for some of their subscribers (an outage, maintenance, a price
/// change), shown on the suspended page from [`Notice::starts_at`] until
/// [`Notice::ends_at`] by the agent's own clock. A subscriber sees it when its owning
/// tenant is in [`Notice::tenant_ids`] or its id is in [`Notice::subscriber_ids`]: the
/// controller resolves who the notice is for (a reseller's subtree, a plan, a site) into
/// those two lists for each site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Notice {
    /// The controller's notice id.
    pub id: i64,
    /// One line, plain text.
    pub title: String,
    /// Plain text; line breaks are kept.
    pub body: String,
    /// Unix seconds: shown from then.
    pub starts_at: i64,
    /// Unix seconds: not shown from then on.
    pub ends_at: i64,
    /// Every subscriber these tenants own (at this site) sees it.
    #[serde(default)]
    pub tenant_ids: Vec<i64>,
    /// These subscribers (at this site) see it.
    #[serde(default)]
    pub subscriber_ids: Vec<i64>,
}

impl Notice {
    /// Whether the notice is shown at `now` (unix seconds) to a subscriber with this id
    /// and owning tenant.
    pub fn shown_to(&self, subscriber_id: i64, tenant_id: i64, now: i64) -> bool {
        self.starts_at <= now
            && now < self.ends_at
            && (self.tenant_ids.contains(&tenant_id)
                || self.subscriber_ids.contains(&subscriber_id))
    }
}

/// How a reseller presents itself to its subscribers (the suspended page). The
/// controller resolves inheritance: a reseller without rebranding gets the brand of the
/// nearest reseller above it that has one, or the operator's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Brand {
    /// The owning tenant, as in [`SubscriberState::tenant_id`].
    pub tenant_id: i64,
    /// The name subscribers know the provider by.
    pub name: String,
    /// CSS colour, `#rrggbb`.
    pub color: Option<String>,
    /// An `https://` URL of the logo image.
    pub logo_url: Option<String>,
    /// How to reach support (phone, e-mail, web), shown as text.
    pub contact: Option<String>,
    /// A line under the name (e.g. "Fibre for the valley"); absent from older controllers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tagline: Option<String>,
}

/// What a site needs to authenticate, rate and enforce one subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubscriberState {
    /// The controller's subscriber id: stable, the key for deltas and events.
    pub id: i64,
    /// The PPPoE / RADIUS login.
    pub username: String,
    /// Clear text: CHAP and MS-CHAPv2 need it. Travels only inside the tunnel.
    pub password: String,
    /// Whether the subscriber may be online; anything but active is refused and cut off.
    pub status: SubscriberStatus,
    /// Unix seconds; the agent enforces it with its own clock.
    pub expires_at: Option<i64>,
    /// `a.b.c.d`, sent as Framed-IP-Address.
    pub static_ipv4: Option<String>,
    /// Bound Calling-Station-Id, `AA:BB:CC:DD:EE:FF`.
    pub mac: Option<String>,
    /// The speed plan's rates, shaped on the agent or sent to the NAS; `None`: unshaped.
    pub rate: Option<Rate>,
    /// How many sessions may be online at once.
    pub max_sessions: u32,
    /// The owning reseller, for branding the suspended page.
    pub tenant_id: i64,
    /// Whether the site probes this subscriber's CPE (WAN checks): every reseller above
    /// it has WAN checks and the subscriber is not marked "never probe". Absent (an
    /// older controller): not probed.
    #[serde(default)]
    pub wan_check: bool,
    /// The TCP ports the WAN checks connect to on this CPE besides ICMP, when its plan or
    /// the subscriber itself says (an empty list: ICMP only). Absent: the site's own list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wan_tcp_ports: Option<Vec<u16>>,
}

/// The subscriber's standing as the edge enforces it. A disabled reseller anywhere above
/// the subscriber makes it [`SubscriberStatus::Disabled`] here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SubscriberStatus {
    /// Paid up and allowed online.
    Active,
    /// Cut off by staff or a reseller (e.g. unpaid), until resumed.
    Suspended,
    /// Disabled for good, or because a reseller above it is disabled.
    Disabled,
    /// Past its paid period (`expires_at`) at the controller; the agent also cuts off by its own clock.
    Expired,
}

impl SubscriberStatus {
    /// Every status, in the order the API lists them.
    pub const ALL: [SubscriberStatus; 4] = [
        SubscriberStatus::Active,
        SubscriberStatus::Suspended,
        SubscriberStatus::Disabled,
        SubscriberStatus::Expired,
    ];

    /// The status as the API and the controller's database spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriberStatus::Active => "active",
            SubscriberStatus::Suspended => "suspended",
            SubscriberStatus::Disabled => "disabled",
            SubscriberStatus::Expired => "expired",
        }
    }

    /// Reads a stored status. Anything unknown reads as `Disabled`: an unreadable
    /// status must never let a subscriber online.
    pub fn parse(s: &str) -> SubscriberStatus {
        match s {
            "active" => SubscriberStatus::Active,
            "suspended" => SubscriberStatus::Suspended,
            "expired" => SubscriberStatus::Expired,
            _ => SubscriberStatus::Disabled,
        }
    }
}

/// A speed plan's rates, in kbit/s, from the subscriber's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rate {
    /// Guaranteed rate towards the subscriber.
    pub download_kbps: u64,
    /// Guaranteed rate from the subscriber.
    pub upload_kbps: u64,
    /// Ceiling towards the subscriber when the link has spare capacity; `None`: no burst above the rate.
    pub burst_download_kbps: Option<u64>,
    /// Ceiling from the subscriber when the link has spare capacity; `None`: no burst above the rate.
    pub burst_upload_kbps: Option<u64>,
}

/// The RADIUS dialect a NAS speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum NasKind {
    /// MikroTik RouterOS: rates as `Mikrotik-Rate-Limit`.
    Mikrotik,
    /// accel-ppp: rates as `Filter-Id` (`down/up` in kbit/s) for its shaper.
    AccelPpp,
    /// Any other NAS: standard RFC attributes only, no vendor rate attributes.
    Generic,
}

/// A NAS allowed to ask this site's agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NasState {
    /// The controller's NAS id: the key for deltas.
    pub id: i64,
    /// The source address its requests come from.
    pub ip: String,
    /// RADIUS shared secret (clear text, inside the tunnel).
    pub secret: String,
    /// Which vendor attributes it understands.
    pub kind: NasKind,
    /// Where CoA and Disconnect-Request go (RFC 5176).
    pub coa_port: u16,
    /// Refuse Access-Requests without Message-Authenticator (BlastRADIUS mitigation).
    pub require_message_authenticator: bool,
}

/// Per-site settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SiteSettings {
    /// Acct-Interim-Interval sent in Access-Accept.
    pub acct_interim_interval_secs: u32,
    /// Shape with HTB on the agent (IPoE on the BNG) instead of RADIUS rate attributes.
    pub shaping_enabled: bool,
}

/// After applying a state: what the agent now enforces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// The [`StateResponse::revision`] now applied.
    #[cfg_attr(feature = "openapi", schema(maximum = 9223372036854775807_u64))]
    pub revision: u64,
    /// Hex SHA-256 of [`digest_input`] over the state the agent enforces.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[0-9A-Fa-f]{64}$"))]
    pub digest: String,
    /// The agent's own version string, so the operator sees what each site runs.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub agent_version: String,
}

/// The canonical text both sides hash to compare states: one line per subscriber and
/// per NAS, sorted by id. The controller computes it from its feed, the agent from its
/// store, so any drift shows as a mismatch.
pub fn digest_input(subscribers: &[SubscriberState], nas: &[NasState]) -> String {
    let mut subs: Vec<&SubscriberState> = subscribers.iter().collect();
    subs.sort_by_key(|s| s.id);
    let mut nases: Vec<&NasState> = nas.iter().collect();
    nases.sort_by_key(|n| n.id);
    let mut out = String::new();
    for s in subs {
        let rate = s
            .rate
            .map(|r| format!("{}/{}", r.download_kbps, r.upload_kbps))
            .unwrap_or_default();
        out.push_str(&format!(
            "s {} {} {:?} {} {} {} {} {}\n",
            s.id,
            s.username,
            s.status,
            s.expires_at.unwrap_or(0),
            s.static_ipv4.as_deref().unwrap_or("-"),
            s.mac.as_deref().unwrap_or("-"),
            rate,
            s.max_sessions
        ));
    }
    for n in nases {
        out.push_str(&format!(
            "n {} {} {:?} {} {}\n",
            n.id, n.ip, n.kind, n.coa_port, n.require_message_authenticator
        ));
    }
    out
}

/// A batch of journaled events, oldest first, with consecutive sequence numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    /// Consecutive events, oldest first; at most [`MAX_BATCH`].
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 1000))]
    pub events: Vec<Event>,
}

/// The controller's answer to a batch: everything up to `through` is stored (once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventsAccepted {
    /// The highest [`Event::seq`] stored; the agent drops its journal up to here.
    pub through: u64,
}

/// One journaled event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Per-agent sequence number, from 1, without gaps.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 9223372036854775807_u64)
    )]
    pub seq: u64,
    /// When it happened on the agent (unix seconds), not when it was delivered.
    pub at: i64,
    #[serde(flatten)]
    /// The event itself; its `type` tag sits beside `seq` and `at` on the wire.
    pub body: EventBody,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventBody {
    /// An accounting record from a NAS.
    Accounting(Accounting),
    /// An Access-Request was rejected; the reason is kept here, never sent to the NAS.
    AuthReject {
        /// The User-Name as the NAS sent it.
        username: String,
        /// The NAS that asked.
        nas_ip: String,
        /// Why it was refused, for the operator's eyes only.
        reason: RejectReason,
        /// The caller's MAC, when the NAS sent one.
        calling_station_id: Option<String>,
    },
    /// A NAS rebooted (Accounting-On/Off): all its sessions were closed.
    NasSessionsClosed {
        /// The NAS that restarted.
        nas_ip: String,
        /// How many sessions the agent closed for it.
        closed: u32,
        /// `Accounting-On` or `Accounting-Off`.
        reason: String,
    },
    /// The outcome of a Disconnect-Request or CoA-Request the agent sent (RFC 5176).
    Coa(CoaEvent),
    /// A WAN check of a subscriber's CPE went down or came back up.
    WanCheck(WanTransition),
}

/// How a CPE is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WanProbe {
    /// ICMP (or ICMPv6) echo.
    Icmp,
    /// A TCP connect to this port (a SYN answered by SYN-ACK counts as up).
    Tcp {
        /// The port connected to.
        #[cfg_attr(feature = "openapi", schema(maximum = 65535))]
        port: u16,
    },
}

/// Whether a probed CPE answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WanState {
    /// It answered the last probe.
    Up,
    /// It missed [`WanTransition::failures`] probes in a row (the agent's threshold).
    Down,
}

/// One change of a CPE's state as the site's agent saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WanTransition {
    /// The subscriber whose CPE it is.
    pub subscriber_id: i64,
    /// The subscriber's owning reseller, as in [`SubscriberState::tenant_id`].
    pub tenant_id: i64,
    /// The address probed (its static IP or the one its session has now).
    pub address: String,
    /// Which probe changed.
    pub probe: WanProbe,
    /// The state it is in now.
    pub state: WanState,
    /// Unix seconds of the state before this one began (0: none known): the outage's start on an `up`.
    pub previous_since: i64,
    /// Consecutive failed probes when it went down (0 on an up).
    pub failures: u32,
    /// The round trip of the answer that brought it up, microseconds.
    #[cfg_attr(feature = "openapi", schema(maximum = 9223372036854775807_u64))]
    pub rtt_us: Option<u64>,
    /// Probes sent and lost since the agent began probing this target.
    #[cfg_attr(feature = "openapi", schema(maximum = 9223372036854775807_u64))]
    pub sent: u64,
    /// Probes of those that were not answered in time.
    #[cfg_attr(feature = "openapi", schema(maximum = 9223372036854775807_u64))]
    pub lost: u64,
    /// How many times it changed state since then.
    pub flaps: u32,
}

/// Which RFC 5176 request the agent sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CoaKind {
    /// Disconnect-Request: end the session (suspended, expired, disabled).
    Disconnect,
    /// CoA-Request: change the session's attributes (a new plan rate).
    Coa,
}

/// How the NAS answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CoaOutcome {
    /// Disconnect-ACK / CoA-ACK.
    Ack,
    /// Disconnect-NAK / CoA-NAK; see [`CoaEvent::error_cause`].
    Nak,
    /// No valid answer after every retransmission.
    Timeout,
}

/// One Disconnect-Request or CoA-Request and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CoaEvent {
    /// Disconnect or CoA.
    pub kind: CoaKind,
    /// How the NAS answered, or that it did not.
    pub outcome: CoaOutcome,
    /// The subscriber whose session it was.
    pub username: String,
    /// The NAS the request went to.
    pub nas_ip: String,
    /// The Acct-Session-Id of the session the request named.
    pub session_id: String,
    /// Error-Cause (RFC 5176 §3.5): a NAK's reason, e.g. 503 Session-Context-Not-Found;
    /// an ACK may carry one too (201 Residual-Session-Context-Removed).
    pub error_cause: Option<u32>,
    /// Requests sent, the first included.
    pub attempts: u32,
    /// Why the agent sent it: `suspended`, `expired`, `disabled`, `plan_change`.
    pub reason: String,
}

/// Why an Access-Request was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// No subscriber with that login at this site.
    UnknownUser,
    /// PAP, CHAP or MS-CHAPv2 did not match the stored password.
    WrongPassword,
    /// The subscriber is suspended.
    Suspended,
    /// The subscriber (or a reseller above it) is disabled.
    Disabled,
    /// Past `expires_at` by the controller's status or the agent's clock.
    Expired,
    /// Calling-Station-Id is not the bound MAC.
    MacMismatch,
    /// Already `max_sessions` sessions online.
    SessionLimit,
    /// An authentication method the agent does not answer (e.g. EAP).
    UnsupportedAuth,
}

/// Accounting-Request status types (RFC 2866).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AcctStatus {
    /// The session began.
    Start,
    /// The session is still up; counters so far.
    InterimUpdate,
    /// The session ended; final counters and the cause.
    Stop,
}

/// One accounting record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Accounting {
    /// Start, interim update or stop.
    pub status: AcctStatus,
    /// The User-Name of the session.
    pub username: String,
    /// Acct-Session-Id: with `nas_ip`, the key of one PPP/IPoE session.
    pub session_id: String,
    /// The NAS that reported it (its source address).
    pub nas_ip: String,
    /// Framed-IP-Address, `a.b.c.d`: the address the edge blocks while the subscriber is cut off.
    pub framed_ip: Option<String>,
    /// Framed-IPv6-Address (RFC 6911), when the NAS reports one.
    #[serde(default)]
    pub framed_ipv6: Option<String>,
    /// The caller's MAC, as the NAS reports it.
    pub calling_station_id: Option<String>,
    /// Seconds online (Acct-Session-Time).
    #[cfg_attr(feature = "openapi", schema(maximum = 9223372036854775807_u64))]
    pub session_time: u64,
    /// Bytes from the subscriber (Acct-Input-Octets with Gigawords).
    #[cfg_attr(feature = "openapi", schema(maximum = 9223372036854775807_u64))]
    pub input_octets: u64,
    /// Bytes to the subscriber.
    #[cfg_attr(feature = "openapi", schema(maximum = 9223372036854775807_u64))]
    pub output_octets: u64,
    /// Acct-Terminate-Cause by its RFC 2866 name (or the number when unknown), on Stop.
    pub terminate_cause: Option<String>,
    /// When the record's event happened, Unix seconds: the NAS's Event-Timestamp
    /// (RFC 2869 §5.3) when it is believable, else when the agent received the record
    /// less its Acct-Delay-Time (RFC 2866 §5.2). It orders one session's records, so a
    /// resent or late older record changes nothing, and dates its traffic. Absent from
    /// agents older than this field: the event's `at` stands in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_with_a_type_tag() {
        let e = Event {
            seq: 7,
            at: 1_800_000_000,
            body: EventBody::AuthReject {
                username: "amina".into(),
                nas_ip: "192.0.2.1".into(),
                reason: RejectReason::Expired,
                calling_station_id: None,
            },
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains(r#""type":"auth_reject""#), "{json}");
        assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
    }

    #[test]
    fn digest_input_ignores_order() {
        let s = |id| SubscriberState {
            id,
            username: format!("u{id}"),
            password: "p".into(),
            status: SubscriberStatus::Active,
            expires_at: None,
            static_ipv4: None,
            mac: None,
            rate: None,
            max_sessions: 1,
            tenant_id: 1,
            wan_check: false,
            wan_tcp_ports: None,
        };
        assert_eq!(
            digest_input(&[s(2), s(1)], &[]),
            digest_input(&[s(1), s(2)], &[])
        );
        assert!(
            !digest_input(&[s(1)], &[]).contains('p'),
            "passwords are not in the digest"
        );
    }
}
