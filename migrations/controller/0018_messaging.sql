-- Messages to subscribers per reseller (issue 13): providers, templates, settings and
-- the outbox with its delivery log.

-- A reseller's provider for one channel. A tenant without one for a channel sends
-- through its nearest ancestor's. The credential is sealed like NAS secrets.
CREATE TABLE message_providers (
    id            INTEGER PRIMARY KEY,
    tenant_id     INTEGER NOT NULL REFERENCES tenants(id),
    channel       TEXT    NOT NULL CHECK (channel IN ('sms', 'whatsapp', 'email')),
    kind          TEXT    NOT NULL CHECK (kind IN ('http', 'twilio', 'whatsapp_cloud', 'smtp')),
    -- The provider's settings as JSON, without the credential.
    config        TEXT    NOT NULL,
    secret_sealed BLOB,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    UNIQUE (tenant_id, channel)
);

-- A reseller's text for one trigger on one channel; without one, its nearest
-- ancestor's, else the built-in default. `enabled = 0` turns the trigger off there.
CREATE TABLE message_templates (
    id         INTEGER PRIMARY KEY,
    tenant_id  INTEGER NOT NULL REFERENCES tenants(id),
    trigger    TEXT    NOT NULL CHECK (trigger IN ('expiry_reminder', 'expired', 'suspended', 'renewed', 'payment_received')),
    channel    TEXT    NOT NULL CHECK (channel IN ('sms', 'whatsapp', 'email')),
    enabled    INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    subject    TEXT,
    body       TEXT    NOT NULL,
    -- WhatsApp: the approved template's name, language and parameters (JSON array).
    wa_name     TEXT,
    wa_language TEXT,
    wa_params   TEXT,
    updated_at INTEGER NOT NULL,
    UNIQUE (tenant_id, trigger, channel)
);

-- A reseller's messaging settings; without a row, its nearest ancestor's, else defaults.
CREATE TABLE messaging_settings (
    tenant_id     INTEGER PRIMARY KEY REFERENCES tenants(id),
    -- Days before expiry the reminder goes out; 0: no reminder.
    reminder_days INTEGER NOT NULL CHECK (reminder_days BETWEEN 0 AND 60),
    -- Sends started per minute for this reseller's subscribers.
    per_minute    INTEGER NOT NULL CHECK (per_minute BETWEEN 1 AND 100000),
    portal_url    TEXT,
    updated_at    INTEGER NOT NULL
);

-- The outbox and delivery log. Times in milliseconds. One row per message; the
-- idempotency key (trigger, subscriber, the event, the contact) makes a trigger that
-- fires twice enqueue once, and is passed to the provider on every attempt.
CREATE TABLE messages (
    id              INTEGER PRIMARY KEY,
    tenant_id       INTEGER NOT NULL REFERENCES tenants(id),
    subscriber_id   INTEGER,
    trigger         TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL UNIQUE,
    channel         TEXT    NOT NULL CHECK (channel IN ('sms', 'whatsapp', 'email')),
    recipient       TEXT    NOT NULL,
    subject         TEXT,
    body            TEXT    NOT NULL,
    -- WhatsApp: {"name":…,"language":…,"params":[…]}.
    wa_template     TEXT,
    -- The SMS text sent instead when WhatsApp fails and its provider falls back.
    fallback_body   TEXT,
    status          TEXT    NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    -- The attempt in flight: written and committed before the request goes out.
    attempt_id      TEXT,
    sending_since   INTEGER,
    next_attempt_at INTEGER NOT NULL,
    provider_id     INTEGER,
    provider_message_id TEXT,
    last_answer     TEXT,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX messages_due ON messages (next_attempt_at) WHERE status = 'queued';
CREATE INDEX messages_in_flight ON messages (sending_since) WHERE status = 'sending';
CREATE INDEX messages_tenant ON messages (tenant_id, id);
-- The rate limit counts a reseller's attempts started in the last minute.
CREATE INDEX messages_started ON messages (tenant_id, sending_since);
