//! The server's identity: a self-signed TLS certificate and an Ed25519 token
//! signing key, and the QUIC stateless-reset key, created in the data directory
//! on first start and kept across restarts.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lanyard_protocol::{cert_pin, token, DeviceId, EventId, JoinLink, Role, TokenClaims, UserId};
use ring::rand::{SecureRandom as _, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate could not be generated.
    #[error("cannot generate the certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// A key file is corrupt.
    #[error("{path} is not a valid key: delete it to start over (clients will need new invites)")]
    BadKey {
        /// The file.
        path: PathBuf,
    },
    /// Randomness was not available.
    #[error("the system random generator failed")]
    Random,
}

/// The server's certificate and keys.
pub struct Identity {
    /// Certificate, DER.
    pub cert_der: Vec<u8>,
    /// Certificate private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
    signing: std::sync::Arc<Ed25519KeyPair>,
    /// Key of QUIC stateless resets (HMAC-SHA256), kept across restarts so a
    /// device talking to a connection the server lost in a crash gets a
    /// stateless reset at once instead of waiting for its idle timeout.
    reset_key: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("pin", &self.pin())
            .finish_non_exhaustive()
    }
}

/// Bytes of the stateless-reset key.
const RESET_KEY_LEN: usize = 64;

fn read(path: &Path) -> Result<Option<Vec<u8>>, IdentityError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(IdentityError::Io {
            path: path.into(),
            source,
        }),
    }
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.into(),
        source,
    };
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).map_err(io)?;
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

impl Identity {
    /// Loads the identity from `dir`, creating what is missing.
    pub fn load_or_create(dir: &Path) -> Result<Self, IdentityError> {
        fs::create_dir_all(dir).map_err(|source| IdentityError::Io {
            path: dir.into(),
            source,
        })?;
        let cert_path = dir.join("cert.der");
        let key_path = dir.join("cert-key.der");
        let sign_path = dir.join("signing-key.pk8");
        let (cert_der, key_der) = match (read(&cert_path)?, read(&key_path)?) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                let names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
                let ck = rcgen::generate_simple_self_signed(names)?;
                let c = ck.cert.der().to_vec();
                let k = ck.signing_key.serialize_der();
                write(&key_path, &k)?;
                write(&cert_path, &c)?;
                (c, k)
            }
        };
        let pk8 = match read(&sign_path)? {
            Some(b) => b,
            None => {
                let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| IdentityError::Random)?;
                write(&sign_path, doc.as_ref())?;
                doc.as_ref().to_vec()
            }
        };
        let signing = Ed25519KeyPair::from_pkcs8(&pk8).map_err(|_| IdentityError::BadKey {
            path: sign_path.clone(),
        })?;
        let reset_path = dir.join("reset-key.bin");
        let reset_key = match read(&reset_path)? {
            Some(b) if b.len() == RESET_KEY_LEN => b,
            Some(_) => return Err(IdentityError::BadKey { path: reset_path }),
            None => {
                let mut key = vec![0u8; RESET_KEY_LEN];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| IdentityError::Random)?;
                write(&reset_path, &key)?;
                key
            }
        };
        Ok(Identity {
            cert_der,
            key_der,
            signing: std::sync::Arc::new(signing),
            reset_key,
        })
    }

    /// The QUIC stateless-reset key (the same after every restart).
    pub fn reset_key(&self) -> ring::hmac::Key {
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.reset_key)
    }

    /// The key of the connection-id generator, derived from the reset key:
    /// the same after every restart, so a restarted server recognizes the
    /// connection ids it handed out before and answers them with a
    /// stateless reset (quinn drops packets whose id it cannot validate).
    pub fn cid_key(&self) -> u64 {
        let tag = ring::hmac::sign(&self.reset_key(), b"lanyard connection ids");
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&tag.as_ref()[..8]);
        u64::from_le_bytes(bytes)
    }

    /// The certificate pin clients check.
    pub fn pin(&self) -> String {
        cert_pin(&self.cert_der)
    }

    /// The token signing key, which also signs seat passes.
    pub fn signer(&self) -> std::sync::Arc<Ed25519KeyPair> {
        self.signing.clone()
    }

    /// The public half of the token signing key.
    pub fn token_public_key(&self) -> Vec<u8> {
        self.signing.public_key().as_ref().to_vec()
    }

    /// Signs a token.
    pub fn sign(&self, claims: &TokenClaims) -> String {
        token::sign(claims, &self.signing)
    }

    /// The certificate chain for rustls.
    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(self.cert_der.clone())]
    }

    /// The certificate key for rustls.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// Issues a join link valid for `ttl` from now.
    pub fn invite(&self, invite: &Invite) -> JoinLink {
        let expires_at = SystemTime::now()
            .checked_add(invite.ttl)
            .unwrap_or(SystemTime::now())
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = TokenClaims {
            event: invite.event.clone(),
            user: invite.user.clone(),
            role: invite.role,
            device: invite.device.clone(),
            expires_at,
        };
        JoinLink {
            servers: invite.servers.clone(),
            event: invite.event.clone(),
            token: self.sign(&claims),
            pin: self.pin(),
        }
    }
}

/// What an invite grants.
#[derive(Debug, Clone)]
pub struct Invite {
    /// The event.
    pub event: EventId,
    /// The role.
    pub role: Role,
    /// The user.
    pub user: UserId,
    /// The device name.
    pub device: DeviceId,
    /// `HOST:PORT` of each node devices may connect to (at least one).
    pub servers: Vec<String>,
    /// How long the token is valid.
    pub ttl: Duration,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap();
        let b = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.pin(), b.pin());
        assert_eq!(a.token_public_key(), b.token_public_key());
        let link = a.invite(&Invite {
            event: EventId::new("e").unwrap(),
            role: Role::Attendee,
            user: UserId::new("u").unwrap(),
            device: DeviceId::new("d").unwrap(),
            servers: vec!["localhost:4433".into()],
            ttl: Duration::from_secs(60),
        });
        let claims = token::verify(&link.token, &b.token_public_key(), 0).unwrap();
        assert_eq!(claims.user.as_str(), "u");
        assert_eq!(JoinLink::parse(&link.to_string()).unwrap(), link);
    }

    #[test]
    fn a_corrupt_signing_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_create(dir.path()).unwrap();
        fs::write(dir.path().join("signing-key.pk8"), b"garbage").unwrap();
        let err = Identity::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("signing-key.pk8"), "{err}");
    }

    #[test]
    fn the_stateless_reset_key_survives_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_create(dir.path()).unwrap();
        let b = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.reset_key, b.reset_key);
        assert_eq!(a.cid_key(), b.cid_key());
        assert_eq!(a.reset_key.len(), RESET_KEY_LEN);
        let other = Identity::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert_ne!(a.reset_key, other.reset_key, "random per server");
        fs::write(dir.path().join("reset-key.bin"), b"short").unwrap();
        let err = Identity::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("reset-key.bin"), "{err}");
    }
}
