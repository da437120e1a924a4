//! TLS for devices: the server is authenticated by the certificate pin from the
//! join link (SHA-256 of its self-signed certificate), not by a CA.

use std::sync::Arc;
use std::time::Duration;

use lanyard_protocol::{cert_pin, wire::ALPN};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

#[derive(Debug)]
struct PinVerifier {
    pin: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if cert_pin(end_entity.as_ref()) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Why a client TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[error("TLS configuration failed: {0}")]
pub struct TlsError(String);

/// QUIC transport settings for a phone on venue WiFi: keep-alives every second
/// (well under NAT timeouts; and since WiFi loss comes in bursts of packets,
/// a steady trickle of packets lets both directions get through a burst well
/// within the idle timeout — measured on the collapsing profile, 1 s instead
/// of 3 s cut reconnects by half), an idle timeout of 30 s after which the
/// device reconnects, room for the server's push streams, and small windows
/// (phones receive little).
pub fn client_transport() -> quinn::TransportConfig {
    client_transport_with(Duration::from_secs(1))
}

/// The RTT a device assumes before its first sample (the server's choice too).
pub const INITIAL_RTT: Duration = Duration::from_secs(1);

/// [`client_transport`] with another keep-alive interval (the background
/// sync adapts it to the link: see `KeepAlive` in the sync module).
pub fn client_transport_with(keep_alive: Duration) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(keep_alive))
        .max_concurrent_uni_streams(4u32.into())
        .max_concurrent_bidi_streams(0u32.into())
        .stream_receive_window((4u32 << 20).into())
        .receive_window((8u32 << 20).into())
        .send_window(1 << 20)
        // Until a first RTT sample, a handshake flight is resent after
        // three times this. Venue WiFi at its worst has RTTs of 1.5-2.5 s
        // (the collapsing profile): from 300 ms every handshake flight went
        // out two or three times (7.9 CRYPTO frames per handshake).
        .initial_rtt(INITIAL_RTT)
        // No path MTU discovery: its probes cost more bytes than larger
        // packets save for this protocol's small frames (see the server's
        // transport configuration).
        .mtu_discovery_config(None);
    if let Ok(idle) = Duration::from_secs(30).try_into() {
        t.max_idle_timeout(Some(idle));
    }
    t
}

/// A quinn client configuration that trusts only the certificate with `pin`
/// and offers the ALPN `alpn` (normally [`ALPN`]).
pub fn pinned_client_config_with_alpn(
    pin: &str,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TlsError> {
    let tls = pinned_tls_config(pin, alpn)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(client_transport()));
    Ok(config)
}

/// The TLS 1.3 settings under [`pinned_client_config_with_alpn`]: only the
/// certificate with `pin` is trusted. Early data (0-RTT) stays off, as
/// rustls defaults; the server refuses it anyway.
pub fn pinned_tls_config(pin: &str, alpn: &[u8]) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinVerifier {
            pin: pin.to_ascii_lowercase(),
            provider,
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

/// A quinn client configuration that trusts only the certificate with `pin`.
pub fn pinned_client_config(pin: &str) -> Result<quinn::ClientConfig, TlsError> {
    pinned_client_config_with_alpn(pin, ALPN)
}

/// The TLS half of a client configuration for `pin`: keep it and build every
/// connection's configuration from it ([`client_config`]), so reconnects
/// resume the TLS session (its ticket cache lives here) instead of a full
/// handshake with the server's certificate.
pub fn pinned_crypto(pin: &str) -> Result<Arc<quinn::crypto::rustls::QuicClientConfig>, TlsError> {
    let tls = pinned_tls_config(pin, ALPN)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError(e.to_string()))?;
    Ok(Arc::new(crypto))
}

/// A connection's configuration: the shared TLS half and a keep-alive interval.
pub fn client_config(
    crypto: Arc<quinn::crypto::rustls::QuicClientConfig>,
    keep_alive: Duration,
) -> quinn::ClientConfig {
    let mut config = quinn::ClientConfig::new(crypto);
    config.transport_config(Arc::new(client_transport_with(keep_alive)));
    config
}
