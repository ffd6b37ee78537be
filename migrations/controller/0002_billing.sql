-- Outpost controller schema, version 2: plans, rate cards, balances, renewals, the ledger.
-- Never edit this file once it has landed: add a new numbered file instead.
-- Money is INTEGER minor units (cents for USD): SQL sums are exact. The installation's
-- currency and minor-unit digits are pinned in `settings` on first start.

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- A reseller's prepaid balance with its parent, and how far below zero it may go.
ALTER TABLE tenants ADD COLUMN balance INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN credit_limit INTEGER NOT NULL DEFAULT 0 CHECK (credit_limit >= 0);
-- Who pays when this tenant renews a subscriber: only itself, or every ancestor too.
ALTER TABLE tenants ADD COLUMN renewal_mode TEXT NOT NULL DEFAULT 'independent'
    CHECK (renewal_mode IN ('independent', 'cascade'));
-- Guards `balance >= -credit_limit` at the storage layer too.
CREATE TRIGGER tenants_balance_floor BEFORE UPDATE OF balance ON tenants
WHEN NEW.balance < -NEW.credit_limit AND NEW.balance < OLD.balance
BEGIN SELECT RAISE(ABORT, 'balance would go below the credit limit'); END;

-- Service packages. An operator plan has no parent; a reseller's retail plan derives
-- from a plan on its rate card (`parent_plan_id`), at speeds up to that plan's.
CREATE TABLE plans (
    id                  INTEGER PRIMARY KEY,
    tenant_id           INTEGER NOT NULL REFERENCES tenants(id),
    parent_plan_id      INTEGER REFERENCES plans(id),
    name                TEXT    NOT NULL,
    download_kbps       INTEGER NOT NULL CHECK (download_kbps > 0),
    upload_kbps         INTEGER NOT NULL CHECK (upload_kbps > 0),
    burst_download_kbps INTEGER CHECK (burst_download_kbps > 0),
    burst_upload_kbps   INTEGER CHECK (burst_upload_kbps > 0),
    validity_days       INTEGER CHECK (validity_days > 0),
    validity_months     INTEGER CHECK (validity_months > 0),
    quota_mb            INTEGER CHECK (quota_mb > 0),
    price               INTEGER NOT NULL CHECK (price >= 0),
    status              TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived')),
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    UNIQUE (tenant_id, name),
    CHECK ((validity_days IS NULL) <> (validity_months IS NULL))
);
CREATE INDEX plans_parent ON plans(parent_plan_id);

-- A plan assigned by a parent to its child, at the child's wholesale price.
CREATE TABLE rate_cards (
    tenant_id       INTEGER NOT NULL REFERENCES tenants(id),
    plan_id         INTEGER NOT NULL REFERENCES plans(id),
    wholesale_price INTEGER NOT NULL CHECK (wholesale_price >= 0),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, plan_id)
) WITHOUT ROWID;
CREATE INDEX rate_cards_plan ON rate_cards(plan_id);

ALTER TABLE subscribers ADD COLUMN plan_id INTEGER REFERENCES plans(id);
ALTER TABLE subscribers ADD COLUMN auto_renew INTEGER NOT NULL DEFAULT 0 CHECK (auto_renew IN (0, 1));
CREATE INDEX subscribers_expiry ON subscribers(expires_at) WHERE status = 'active';

-- One money operation (add balance, renewal, payment, refund, adjustment): groups its
-- ledger rows and remembers its Idempotency-Key.
CREATE TABLE operations (
    id              INTEGER PRIMARY KEY,
    kind            TEXT    NOT NULL,
    actor_user_id   INTEGER,
    idempotency_key TEXT,
    at              INTEGER NOT NULL
);

-- The ledger: append-only. For every tenant and account, `balance_after` chains from
-- 0 by `amount`, and the 'balance' account's last `balance_after` is tenants.balance.
CREATE TABLE ledger (
    id                     INTEGER PRIMARY KEY,
    operation_id           INTEGER NOT NULL REFERENCES operations(id),
    tenant_id              INTEGER NOT NULL REFERENCES tenants(id),
    -- 'balance': prepaid money held with the parent; 'collections': money collected
    -- from subscribers (the tenant's revenue, kept apart from what it owes upstream).
    account                TEXT    NOT NULL CHECK (account IN ('balance', 'collections')),
    kind                   TEXT    NOT NULL CHECK (kind IN ('credit', 'transfer_out', 'renewal', 'payment',
                                                            'refund', 'refund_out', 'adjustment')),
    amount                 INTEGER NOT NULL,
    balance_after          INTEGER NOT NULL,
    subscriber_id          INTEGER REFERENCES subscribers(id),
    plan_id                INTEGER REFERENCES plans(id),
    counterparty_tenant_id INTEGER REFERENCES tenants(id),
    actor_user_id          INTEGER,
    idempotency_key        TEXT,
    reason                 TEXT,
    at                     INTEGER NOT NULL
);
CREATE INDEX ledger_tenant ON ledger(tenant_id, account, id);
CREATE INDEX ledger_subscriber ON ledger(subscriber_id) WHERE subscriber_id IS NOT NULL;
CREATE INDEX ledger_at ON ledger(at);
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;

-- Renewals, for expiry history and the renewals/revenue summary.
CREATE TABLE renewals (
    id             INTEGER PRIMARY KEY,
    operation_id   INTEGER NOT NULL REFERENCES operations(id),
    subscriber_id  INTEGER NOT NULL REFERENCES subscribers(id),
    tenant_id      INTEGER NOT NULL REFERENCES tenants(id),
    plan_id        INTEGER NOT NULL REFERENCES plans(id),
    periods        INTEGER NOT NULL CHECK (periods > 0),
    retail_price   INTEGER NOT NULL,
    cost           INTEGER NOT NULL,
    old_expires_at INTEGER,
    new_expires_at INTEGER NOT NULL,
    automatic      INTEGER NOT NULL DEFAULT 0,
    at             INTEGER NOT NULL
);
CREATE INDEX renewals_tenant ON renewals(tenant_id, at);
CREATE TRIGGER renewals_no_update BEFORE UPDATE ON renewals
BEGIN SELECT RAISE(ABORT, 'renewals are append-only'); END;
CREATE TRIGGER renewals_no_delete BEFORE DELETE ON renewals
BEGIN SELECT RAISE(ABORT, 'renewals are append-only'); END;

-- Responses of money calls by Idempotency-Key, so a retry gets the first answer.
CREATE TABLE idempotency (
    user_id      INTEGER NOT NULL,
    key          TEXT    NOT NULL,
    request_hash TEXT    NOT NULL,
    status       INTEGER NOT NULL,
    response     TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
) WITHOUT ROWID;
