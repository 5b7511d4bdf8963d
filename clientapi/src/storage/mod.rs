//! The client API's own tables (accounts with profiles, devices, access
//! tokens, registration nonces and sessions, account data), on SQLite and PostgreSQL.

pub mod account_data;
pub mod accounts;
pub mod backup;
pub mod devices;
pub mod directory;
pub mod keys;
pub mod login_tokens;
pub mod media;
pub mod openid;
pub mod refresh_tokens;
pub mod registration;
pub mod registration_tokens;
pub mod reports;
pub mod tokens;

use myelin_storage::Migration;

pub const COMPONENT: &str = "clientapi";

const V1_SQLITE: &str = "
CREATE TABLE clientapi_accounts (
    localpart TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT,
    is_admin BOOLEAN NOT NULL DEFAULT FALSE,
    user_type TEXT,
    created_ms BIGINT NOT NULL
);
CREATE TABLE clientapi_devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
CREATE TABLE clientapi_access_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX clientapi_access_tokens_device ON clientapi_access_tokens (user_id, device_id);
CREATE TABLE clientapi_registration_nonces (
    nonce TEXT PRIMARY KEY NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE TABLE clientapi_uia_sessions (
    session_id TEXT PRIMARY KEY NOT NULL,
    created_ms BIGINT NOT NULL
);
";

/// Profiles and account data (`room_id` is `''` for global account data,
/// so that it can be part of the primary key).
const V2: &str = "
ALTER TABLE clientapi_accounts ADD COLUMN displayname TEXT;
ALTER TABLE clientapi_accounts ADD COLUMN avatar_url TEXT;
CREATE TABLE clientapi_account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    data_type TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
";

/// Deactivated accounts keep their row (the localpart stays taken).
const V3: &str = "
ALTER TABLE clientapi_accounts ADD COLUMN deactivated BOOLEAN NOT NULL DEFAULT FALSE;
";

/// Room aliases, the public directory and the room summaries it shows
/// (a read model of `roomserver.output`).
const V4: &str = "
CREATE TABLE clientapi_room_aliases (
    alias TEXT PRIMARY KEY NOT NULL,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
CREATE INDEX clientapi_room_aliases_room ON clientapi_room_aliases (room_id);
CREATE TABLE clientapi_published_rooms (
    room_id TEXT PRIMARY KEY NOT NULL
);
CREATE TABLE clientapi_room_summaries (
    room_id TEXT PRIMARY KEY NOT NULL,
    name TEXT,
    topic TEXT,
    canonical_alias TEXT,
    avatar_url TEXT,
    join_rule TEXT,
    history_visibility TEXT,
    guest_access TEXT,
    room_type TEXT
);
CREATE TABLE clientapi_directory_members (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
";

/// End-to-end encryption keys of devices: identity keys, one-time keys
/// (deleted when claimed) and one fallback key per algorithm (marked used
/// when claimed). A device's keys go with the device.
const V5: &str = "
CREATE TABLE clientapi_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    keys TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id),
    FOREIGN KEY (user_id, device_id) REFERENCES clientapi_devices (user_id, device_id) ON DELETE CASCADE
);
CREATE TABLE clientapi_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id),
    FOREIGN KEY (user_id, device_id) REFERENCES clientapi_devices (user_id, device_id) ON DELETE CASCADE
);
CREATE TABLE clientapi_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm),
    FOREIGN KEY (user_id, device_id) REFERENCES clientapi_devices (user_id, device_id) ON DELETE CASCADE
);
";

/// Media uploaded to this server; the bytes are files under the media path.
const V6: &str = "
CREATE TABLE clientapi_media (
    media_id TEXT PRIMARY KEY NOT NULL,
    content_type TEXT NOT NULL,
    filename TEXT,
    size BIGINT NOT NULL,
    uploader TEXT NOT NULL,
    created_ms BIGINT NOT NULL
);
";

/// Cross-signing keys (`master`, `self_signing`, `user_signing`) and the
/// signatures users upload for keys (a device id or a cross-signing public
/// key names the key signed).
const V7: &str = "
CREATE TABLE clientapi_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);
CREATE TABLE clientapi_key_signatures (
    target_user TEXT NOT NULL,
    target_key TEXT NOT NULL,
    signer_user TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user, target_key, signer_user, signer_key_id)
);
";

/// Server-side key backups: versions per user (deleted ones keep their
/// number, so numbers are never reused) and the backed-up room keys.
const V8: &str = "
CREATE TABLE clientapi_backup_versions (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL,
    PRIMARY KEY (user_id, version)
);
CREATE TABLE clientapi_backup_keys (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    key_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
";

/// Guest accounts (`POST /register?kind=guest`), until they upgrade.
const V9: &str = "
ALTER TABLE clientapi_accounts ADD COLUMN is_guest BOOLEAN NOT NULL DEFAULT FALSE;
";

/// Content reports (events, rooms, users) for server admins.
const V10_SQLITE: &str = "
CREATE TABLE clientapi_reports (
    report_id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ts BIGINT NOT NULL, reporter TEXT NOT NULL, kind TEXT NOT NULL,
    room_id TEXT, event_id TEXT, target_user_id TEXT, reason TEXT, score BIGINT
);
";
const V10_POSTGRES: &str = "
CREATE TABLE clientapi_reports (
    report_id BIGSERIAL PRIMARY KEY,
    received_ts BIGINT NOT NULL, reporter TEXT NOT NULL, kind TEXT NOT NULL,
    room_id TEXT, event_id TEXT, target_user_id TEXT, reason TEXT, score BIGINT
);
";

/// OpenID tokens (`/openid/request_token`), by hash, until they expire.
const V11: &str = "
CREATE TABLE clientapi_openid_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL, user_id TEXT NOT NULL, expires_ms BIGINT NOT NULL
);
CREATE INDEX clientapi_openid_tokens_expiry ON clientapi_openid_tokens (expires_ms);
";

/// Registration tokens (Synapse's semantics: `pending` counts sessions
/// that passed the token stage and have not registered yet), and the token
/// a UIA session passed with.
const V12: &str = "
CREATE TABLE clientapi_registration_tokens (
    token TEXT PRIMARY KEY NOT NULL, uses_allowed BIGINT, pending BIGINT NOT NULL DEFAULT 0,
    completed BIGINT NOT NULL DEFAULT 0, expiry_time BIGINT
);
ALTER TABLE clientapi_uia_sessions ADD COLUMN registration_token TEXT;
";

/// Refresh tokens: access tokens issued with one expire (`expires_ms`);
/// each refresh token names the access token issued with it and the
/// refresh token it replaced, which stays usable until the new pair is
/// used (`retires_refresh_hash` on the new access token).
const V13: &str = "
ALTER TABLE clientapi_access_tokens ADD COLUMN expires_ms BIGINT;
ALTER TABLE clientapi_access_tokens ADD COLUMN retires_refresh_hash TEXT;
CREATE TABLE clientapi_refresh_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL, user_id TEXT NOT NULL, device_id TEXT NOT NULL,
    access_hash TEXT NOT NULL, prev_hash TEXT, created_ms BIGINT NOT NULL
);
CREATE INDEX clientapi_refresh_tokens_device ON clientapi_refresh_tokens (user_id, device_id);
";

/// Other servers' files fetched for local clients: the file is in the
/// media store under `file_id`, an id this server generated.
const V14: &str = "
CREATE TABLE clientapi_remote_media (
    server_name TEXT NOT NULL, media_id TEXT NOT NULL, file_id TEXT NOT NULL, content_type TEXT NOT NULL,
    filename TEXT, size BIGINT NOT NULL, created_ms BIGINT NOT NULL, PRIMARY KEY (server_name, media_id)
);
";

/// Profile fields beyond the display name and avatar (custom ones and
/// `m.tz`), as one JSON object.
const V15: &str = "ALTER TABLE clientapi_accounts ADD COLUMN profile_fields TEXT NOT NULL DEFAULT '{}';";

/// Login tokens minted by `/login/get_token`, by hash.
const V16: &str = "
CREATE TABLE clientapi_login_tokens (
    token_hash TEXT PRIMARY KEY NOT NULL, user_id TEXT NOT NULL, expires_ms BIGINT NOT NULL
);
";

/// `mxc://` URIs created ahead of their content (`POST /media/v1/create`)
/// until it is uploaded (then the row moves to `clientapi_media`) or they
/// expire; `uploading` marks the one upload under way.
const V17: &str = "
CREATE TABLE clientapi_pending_media (
    media_id TEXT PRIMARY KEY NOT NULL, creator TEXT NOT NULL, created_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL, uploading BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX clientapi_pending_media_creator ON clientapi_pending_media (creator, expires_ms);
CREATE INDEX clientapi_pending_media_expiry ON clientapi_pending_media (expires_ms);
";

/// Room members' own display names and avatars, from their member events:
/// the user directory finds other servers' users by them.
const V18: &str = "
ALTER TABLE clientapi_directory_members ADD COLUMN displayname TEXT;
ALTER TABLE clientapi_directory_members ADD COLUMN avatar_url TEXT;
";

pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, sqlite: V1_SQLITE, postgres: V1_SQLITE },
    Migration { version: 2, sqlite: V2, postgres: V2 },
    Migration { version: 3, sqlite: V3, postgres: V3 },
    Migration { version: 4, sqlite: V4, postgres: V4 },
    Migration { version: 5, sqlite: V5, postgres: V5 },
    Migration { version: 6, sqlite: V6, postgres: V6 },
    Migration { version: 7, sqlite: V7, postgres: V7 },
    Migration { version: 8, sqlite: V8, postgres: V8 },
    Migration { version: 9, sqlite: V9, postgres: V9 },
    Migration { version: 10, sqlite: V10_SQLITE, postgres: V10_POSTGRES },
    Migration { version: 11, sqlite: V11, postgres: V11 },
    Migration { version: 12, sqlite: V12, postgres: V12 },
    Migration { version: 13, sqlite: V13, postgres: V13 },
    Migration { version: 14, sqlite: V14, postgres: V14 },
    Migration { version: 15, sqlite: V15, postgres: V15 },
    Migration { version: 16, sqlite: V16, postgres: V16 },
    Migration { version: 17, sqlite: V17, postgres: V17 },
    Migration { version: 18, sqlite: V18, postgres: V18 },
];
