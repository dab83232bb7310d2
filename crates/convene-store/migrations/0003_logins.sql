-- convene schema, version 3: email one-time-code login (seed 004's `login`, the user sessions
-- seed 002 accepts). Portable SQL as in 0001. Codes are stored only as salted HMAC digests.

CREATE TABLE users (
    id         TEXT   NOT NULL PRIMARY KEY,
    -- Lower-cased (convene_core::login::Email).
    email      TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CONSTRAINT users_email_key UNIQUE (email)
);

-- At most one live code per address: a new send replaces the row.
CREATE TABLE login_codes (
    email      TEXT   NOT NULL PRIMARY KEY,
    salt       TEXT   NOT NULL,
    digest     TEXT   NOT NULL,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    tries      BIGINT NOT NULL CHECK (tries >= 0),
    used       BIGINT NOT NULL CHECK (used IN (0, 1))
);

-- Send caps: one fixed-window counter per subject (`email:<address>`, `client:<ip>`).
CREATE TABLE login_sends (
    subject           TEXT   NOT NULL PRIMARY KEY,
    sends             BIGINT NOT NULL,
    window_started_at BIGINT NOT NULL
);
