//! X.509 certificates as the Notary Project uses them: parsing, the subject as text and as
//! attributes, and the chain checks of its certificate requirements (code signing and time
//! stamping chains).
//!
//! The rules follow notation-core-go's `x509` package, which implements the specification's
//! "Certificate Requirements": a chain is ordered leaf first, each certificate is signed by the
//! next and names it as issuer, the last is a self-signed root (a single self-signed leaf is
//! allowed), CAs carry `basicConstraints` CA=true and the `keyCertSign` usage, the leaf carries
//! a critical `keyUsage` with `digitalSignature` only, and its extended key usages exclude the
//! ones meant for other purposes (code signing) or are exactly `timeStamping` (time stamping).

use std::time::SystemTime;

use der::asn1::ObjectIdentifier;
use der::{Decode, Encode, Reader, SliceReader};
use x509_cert::Certificate;
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages};

use super::crypto::{self, PublicKey};

const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const EKU_SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
const EKU_CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
const EKU_EMAIL: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4");
const EKU_TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
const EKU_OCSP_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.9");

/// One certificate: its DER (trust store matching compares these bytes), the raw
/// `tbsCertificate` its issuer signed, and the parsed fields.
#[derive(Debug, Clone)]
pub(super) struct Cert {
    pub der: Vec<u8>,
    tbs: Vec<u8>,
    pub cert: Certificate,
}

impl PartialEq for Cert {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

/// What a chain is for: the leaf's extended key usage rules differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    CodeSigning,
    TimeStamping,
}

impl Cert {
    pub(super) fn from_der(der: &[u8]) -> Result<Cert, String> {
        let cert = Certificate::from_der(der).map_err(|e| format!("not a DER X.509 certificate: {e}"))?;
        // The signed bytes exactly as they came, not a re-encoding of the parsed structure.
        let tbs = (|| -> der::Result<Vec<u8>> {
            let mut r = SliceReader::new(der)?;
            der::Header::decode(&mut r)?;
            Ok(r.tlv_bytes()?.to_vec())
        })()
        .map_err(|e| format!("not a DER X.509 certificate: {e}"))?;
        Ok(Cert { der: der.to_vec(), tbs, cert })
    }

    /// The subject as RFC 4514 text (`CN=…,O=…,C=…`), as notation prints it.
    pub(super) fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// The subject's attributes as (type, value), types named as the trust policy's
    /// `x509.subject` names them (C, ST, L, O, OU, CN, …; others by OID).
    pub(super) fn subject_attributes(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for rdn in self.cert.tbs_certificate.subject.0.iter() {
            for atv in rdn.0.iter() {
                let name = match atv.oid.to_string().as_str() {
                    "2.5.4.6" => "C".to_string(),
                    "2.5.4.8" => "ST".to_string(),
                    "2.5.4.7" => "L".to_string(),
                    "2.5.4.10" => "O".to_string(),
                    "2.5.4.11" => "OU".to_string(),
                    "2.5.4.3" => "CN".to_string(),
                    "2.5.4.5" => "SERIALNUMBER".to_string(),
                    "2.5.4.9" => "STREET".to_string(),
                    "2.5.4.17" => "POSTALCODE".to_string(),
                    "1.2.840.113549.1.9.1" => "EMAILADDRESS".to_string(),
                    other => other.to_string(),
                };
                out.push((name, attribute_text(&atv.value)));
            }
        }
        out
    }

    pub(super) fn public_key(&self) -> Result<PublicKey, String> {
        PublicKey::from_spki(&self.cert.tbs_certificate.subject_public_key_info)
            .map_err(|e| format!("certificate {:?}: {e}", self.subject()))
    }

    pub(super) fn not_before(&self) -> SystemTime {
        self.cert.tbs_certificate.validity.not_before.to_system_time()
    }

    pub(super) fn not_after(&self) -> SystemTime {
        self.cert.tbs_certificate.validity.not_after.to_system_time()
    }

    /// Whether `issuer` signed this certificate and is named as its issuer.
    pub(super) fn issued_by(&self, issuer: &Cert) -> Result<(), String> {
        let tbs = &self.cert.tbs_certificate;
        if tbs.issuer.to_der().ok() != issuer.cert.tbs_certificate.subject.to_der().ok() {
            return Err(format!("certificate {:?} is not issued by {:?}", self.subject(), issuer.subject()));
        }
        let scheme = crypto::scheme_of(&self.cert.signature_algorithm, None)?;
        let sig = self.cert.signature.as_bytes().ok_or("certificate signature is not whole bytes")?;
        issuer
            .public_key()?
            .verify(scheme, &self.tbs, sig)
            .map_err(|e| format!("certificate {:?} is not signed by {:?}: {e}", self.subject(), issuer.subject()))
    }

    fn self_signed(&self) -> bool {
        self.issued_by(self).is_ok()
    }

    fn extension<'a, T: Decode<'a>>(&'a self, oid: ObjectIdentifier) -> Result<Option<(bool, T)>, String> {
        let Some(ext) = self.cert.tbs_certificate.extensions.as_ref().and_then(|e| e.iter().find(|e| e.extn_id == oid))
        else {
            return Ok(None);
        };
        let value = T::from_der(ext.extn_value.as_bytes())
            .map_err(|e| format!("certificate {:?}: bad extension {oid}: {e}", self.subject()))?;
        Ok(Some((ext.critical, value)))
    }

    fn key_usage(&self) -> Result<KeyUsage, String> {
        match self.extension::<KeyUsage>(KEY_USAGE)? {
            Some((true, ku)) => Ok(ku),
            Some((false, _)) => Err(format!("certificate {:?}: key usage extension must be marked critical", self.subject())),
            None => Err(format!("certificate {:?}: key usage extension must be present", self.subject())),
        }
    }

    fn check_ca(&self, expected_path_len: usize) -> Result<(), String> {
        match self.extension::<BasicConstraints>(BASIC_CONSTRAINTS)? {
            Some((_, bc)) if bc.ca => {
                if let Some(max) = bc.path_len_constraint
                    && (max as usize) < expected_path_len
                {
                    return Err(format!(
                        "certificate {:?}: path length constraint {max} is shorter than the chain below it",
                        self.subject()
                    ));
                }
            }
            _ => {
                return Err(format!("certificate {:?}: a CA certificate must have basic constraints CA=true", self.subject()));
            }
        }
        if !self.key_usage()?.0.contains(KeyUsages::KeyCertSign) {
            return Err(format!("certificate {:?}: a CA certificate must have the keyCertSign key usage", self.subject()));
        }
        Ok(())
    }

    fn check_leaf(&self, purpose: Purpose) -> Result<(), String> {
        if let Some((_, bc)) = self.extension::<BasicConstraints>(BASIC_CONSTRAINTS)?
            && bc.ca
        {
            return Err(format!("certificate {:?}: a signing certificate must not be a CA", self.subject()));
        }
        let ku = self.key_usage()?;
        if !ku.0.contains(KeyUsages::DigitalSignature) {
            return Err(format!("certificate {:?}: key usage must include digitalSignature", self.subject()));
        }
        let forbidden = [
            KeyUsages::KeyEncipherment,
            KeyUsages::DataEncipherment,
            KeyUsages::KeyAgreement,
            KeyUsages::KeyCertSign,
            KeyUsages::CRLSign,
            KeyUsages::EncipherOnly,
            KeyUsages::DecipherOnly,
        ];
        if purpose == Purpose::CodeSigning && forbidden.iter().any(|&k| ku.0.contains(k)) {
            // As notation-core-go: digitalSignature (nonRepudiation tolerated), nothing else.
            return Err(format!("certificate {:?}: key usage must be digitalSignature only", self.subject()));
        }
        let eku = self.extension::<ExtendedKeyUsage>(EXT_KEY_USAGE)?;
        match purpose {
            Purpose::CodeSigning => {
                if let Some((_, eku)) = eku {
                    let excluded = [EKU_SERVER_AUTH, EKU_CLIENT_AUTH, EKU_EMAIL, EKU_TIME_STAMPING, EKU_OCSP_SIGNING];
                    if let Some(bad) = eku.0.iter().find(|o| excluded.contains(o)) {
                        return Err(format!(
                            "certificate {:?}: extended key usage {bad} is not allowed for code signing",
                            self.subject()
                        ));
                    }
                }
            }
            Purpose::TimeStamping => match eku {
                Some((true, eku)) if eku.0 == [EKU_TIME_STAMPING] => {}
                _ => {
                    return Err(format!(
                        "certificate {:?}: a time stamping certificate must have exactly the critical timeStamping extended key usage",
                        self.subject()
                    ));
                }
            },
        }
        self.public_key()?;
        Ok(())
    }

    /// Whether the certificate says it is a CA (basic constraints CA=true).
    pub(super) fn is_ca(&self) -> bool {
        matches!(self.extension::<BasicConstraints>(BASIC_CONSTRAINTS), Ok(Some((_, bc))) if bc.ca)
    }

    /// Whether `at` lies within this certificate's validity period.
    pub(super) fn valid_at(&self, at: SystemTime) -> bool {
        self.not_before() <= at && at <= self.not_after()
    }
}

/// A directory string's text: UTF8String, PrintableString, IA5String and TeletexString (read as
/// Latin-1) as they are, BMPString from UTF-16; anything else as its hex bytes, which no
/// trusted identity can equal by accident.
fn attribute_text(value: &der::asn1::Any) -> String {
    use der::{Tag, Tagged};
    let bytes = value.value();
    match value.tag() {
        Tag::Utf8String | Tag::PrintableString | Tag::Ia5String | Tag::VisibleString => String::from_utf8_lossy(bytes).into_owned(),
        Tag::TeletexString => bytes.iter().map(|&b| b as char).collect(),
        Tag::BmpString => {
            let units: Vec<u16> = bytes.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])).collect();
            String::from_utf16_lossy(&units)
        }
        _ => format!("#{}", hex::encode(bytes)),
    }
}

/// Checks a complete chain, leaf first, ending with a self-signed root, against the
/// specification's certificate requirements for `purpose`. Validity periods are checked
/// separately (at the signing time the timestamp proves, or now).
pub(super) fn check_chain(chain: &[Cert], purpose: Purpose) -> Result<(), String> {
    let Some(leaf) = chain.first() else {
        return Err("the certificate chain is empty".into());
    };
    if chain.len() == 1 {
        leaf.issued_by(leaf).map_err(|e| format!("invalid self-signed certificate: {e}"))?;
        return leaf.check_leaf(purpose);
    }
    for (i, cert) in chain.iter().enumerate() {
        if i == chain.len() - 1 {
            if !cert.self_signed() {
                return Err(format!(
                    "root certificate {:?} is not self-signed: the chain must end with a self-signed root",
                    cert.subject()
                ));
            }
        } else {
            if cert.self_signed() {
                return Err(format!("certificate {:?} in the chain is self-signed but not its root", cert.subject()));
            }
            cert.issued_by(&chain[i + 1])?;
        }
        if i == 0 {
            cert.check_leaf(purpose)?;
        } else {
            cert.check_ca(i - 1)?;
        }
    }
    Ok(())
}

/// Longer chains are refused before any is parsed: real ones have two to four certificates,
/// and each costs a signature check.
const MAX_CHAIN: usize = 10;

/// Parses a list of DER certificates (an envelope's `x5chain`/`x5c`).
pub(super) fn parse_chain(ders: &[Vec<u8>]) -> Result<Vec<Cert>, String> {
    if ders.len() > MAX_CHAIN {
        return Err(format!("the certificate chain has {} certificates, more than {MAX_CHAIN}", ders.len()));
    }
    ders.iter().map(|d| Cert::from_der(d)).collect()
}
