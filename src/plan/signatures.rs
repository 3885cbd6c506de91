//! The provenance gate's part of the plan: for each image the run covers, the signatures of the
//! digest being mirrored (the index, or the manifest when there is no index) are found in a
//! registry and judged by [`crate::provenance::Verifier`]. The transfer then holds back what
//! the gate rejects (see [`SignatureCheck::rejection`]).
//!
//! Which registry is asked depends on the command: `plan` and `sync` ask the source, before
//! anything is read through a cache or written to the target; `verify` asks the target, where
//! a copied image's signatures travel with it as referrers. A pull-through cache holds no
//! signatures of its own, so `verify` asks the source for warm-mode images.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use super::{Status, Wanted};
use crate::config::{MappingMode, SignatureMode};
use crate::digest::Digest;
use crate::provenance::{Outcome, Subject, Verifier};
use crate::registry::{Registries, RegistryError};

/// Which command the gate serves: it decides where signatures are looked for and for which
/// images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateFor {
    /// Every image that could be examined (and is needed), in the source.
    Plan,
    /// Images the sync will copy or warm, in the source: an image already in place is not
    /// read again (it passed the gate when it came in), which keeps a nightly run that has
    /// nothing to do as cheap as without the gate.
    Sync,
    /// Images whose tag is in the target, in the target (the source for warm-mode images).
    Verify,
}

/// The provenance gate of a run: loaded once, before anything is read from a registry.
pub struct Gate {
    pub verifier: Arc<Verifier>,
    /// `audit` or `enforce` (a run with `off` has no gate).
    pub mode: SignatureMode,
    pub for_command: GateFor,
    /// The time certificates are checked at when no timestamp says otherwise.
    pub now: SystemTime,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("mode", &self.mode).field("for_command", &self.for_command).finish()
    }
}

/// What the gate found for one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SignatureCheck {
    pub outcome: Outcome,
    /// The gate enforces: an image whose outcome is `unsigned` or `invalid` does not enter the
    /// target (and fails `verify`).
    pub enforced: bool,
}

impl SignatureCheck {
    /// Why the image may not enter the target (or fails `verify`), under `enforce`.
    pub fn rejection(&self) -> Option<String> {
        if !self.enforced {
            return None;
        }
        match &self.outcome {
            Outcome::Unsigned => Some("no signature found (signatures.mode is enforce)".into()),
            Outcome::Invalid { reason } => {
                Some(format!("signature invalid: {}", crate::sanitize::short(reason)))
            }
            Outcome::Verified { .. } | Outcome::NotCovered => None,
        }
    }
}

impl Gate {
    /// Whether an image the plan found at `status` is checked.
    pub fn applies(&self, status: Status) -> bool {
        match self.for_command {
            // An image the plan skipped as not needed goes nowhere: nothing to gate.
            GateFor::Plan => !matches!(status, Status::Error | Status::Skipped),
            GateFor::Sync => status.needs_work(),
            GateFor::Verify => matches!(status, Status::Present | Status::Partial),
        }
    }

    /// Whether a copy of `w` follows the check, which may take what the gate read (the
    /// registry client serves each such read once): a `sync` copying an image the gate lets in.
    /// A `plan`, a warm and a rejected image hand nothing over, as nothing would take it and the
    /// client would hold it to the end of the run.
    pub fn copy_follows(&self, w: &Wanted, check: &SignatureCheck) -> bool {
        self.for_command == GateFor::Sync && w.mode == MappingMode::Copy && check.rejection().is_none()
    }

    /// Whether the source reference is covered by a trust policy or a cosign scope.
    pub fn covers(&self, w: &Wanted) -> bool {
        self.verifier.covers(&w.source.to_string())
    }

    /// Finds and judges the signatures of `subject` (the source digest, with its media type and
    /// size as the source's manifest has them). When a copy follows that takes the image's
    /// referrers along (`referrers_copied`, and see [`Gate::copy_follows`]), what was read is
    /// handed to it, so the gate costs the copy's own referrers listing and signature manifests
    /// nothing more: only the signature blobs are read twice.
    pub async fn check(
        &self,
        registries: &Registries,
        w: &Wanted,
        subject: Subject,
        referrers_copied: bool,
    ) -> Result<SignatureCheck, RegistryError> {
        let enforced = self.mode == SignatureMode::Enforce;
        let source = w.source.to_string();
        if !self.verifier.covers(&source) {
            return Ok(SignatureCheck { outcome: Outcome::NotCovered, enforced });
        }
        let side = match self.for_command {
            GateFor::Verify if w.mode == MappingMode::Copy => &w.target,
            _ => &w.source,
        };
        let registry = registries.get(&side.registry)?;
        let digest: Digest = subject.digest.parse().map_err(|e| RegistryError::Protocol {
            registry: registry.host.clone(),
            message: format!("{source}: digest {}: {e}", subject.digest),
        })?;
        let found = registry.signatures(&side.repository, &digest).await?;
        let outcome = if found.signatures.is_empty() && !found.unusable.is_empty() {
            Outcome::Invalid { reason: found.unusable.join("; ") }
        } else {
            match self.verifier.verify(&source, &subject, &found.signatures, self.now) {
                // The candidates that could not even be read say why when nothing verified.
                Outcome::Unsigned if !found.unusable.is_empty() => {
                    Outcome::Invalid { reason: found.unusable.join("; ") }
                }
                o => o,
            }
        };
        let check = SignatureCheck { outcome: sanitized(outcome), enforced };
        if referrers_copied && self.copy_follows(w, &check) {
            registry.hand_to_copy(&side.repository, &digest, &found);
        }
        Ok(check)
    }
}

/// Signer and reason come from certificates and registries: made safe for a terminal, a log
/// line and a report.
fn sanitized(o: Outcome) -> Outcome {
    match o {
        Outcome::Verified { signer } => Outcome::Verified { signer: crate::sanitize::short(&signer) },
        Outcome::Invalid { reason } => Outcome::Invalid { reason: crate::sanitize::short(&reason) },
        o => o,
    }
}
