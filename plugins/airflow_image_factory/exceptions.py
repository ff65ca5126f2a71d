"""Every error this package raises on purpose lives here, so callers catch by meaning."""

from __future__ import annotations


class ImageFactoryError(Exception):
    """Base of all domain errors."""

    # True for a PermanentError: no retry can mend it.
    permanent: bool = False
    # The request field or setting the error is about, where there is one: named first in the message.
    field: str | None = None


class PermanentError(ImageFactoryError):
    """Base of the errors no retry can mend (a branch or an image that does not exist, a repository that
    cannot be read, a secret aimed at the wrong host): the task fails at once instead of retrying. The one
    mapping to Airflow's ``AirflowFailException`` is ``tasks.operators.fail_at_once``."""

    permanent = True


class InvalidBuildRequest(ImageFactoryError, ValueError):
    """A build request (DAG params / conf) holds a bad value. Names the field."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class InvalidBuildRequests(InvalidBuildRequest):
    """Several fields are bad at once; all of them are reported together."""

    def __init__(self, errors: list[InvalidBuildRequest], what: str = "build request"):
        self.errors = errors
        fields = ", ".join(e.field for e in errors)
        detail = "; ".join(str(e) for e in errors)
        ImageFactoryError.__init__(self, f"invalid {what} ({fields}): {detail}")
        self.field = errors[0].field
        self.message = detail


class SettingsError(ImageFactoryError):
    """The defaults file, an Airflow Variable or an environment override is malformed."""


class CacheImageMissing(ImageFactoryError):
    """A specific (non-latest) cache image was asked for and the registry does not hold it."""


class RegistryError(ImageFactoryError):
    """The registry answered with an error that retrying will not fix."""

    def __init__(self, message: str, *, status: int | None = None):
        self.status = status
        super().__init__(message)


class RegistryAuthError(RegistryError):
    """Credentials were refused, or no credentials were given where the registry needs them."""


class RegistryUnavailable(RegistryError):
    """The registry kept failing (5xx, 429, dropped connections) until the retries ran out."""


class ManifestNotFound(RegistryError):
    """The asked-for manifest (image:tag or image@digest) does not exist."""


class DigestMismatch(RegistryError):
    """A tag just copied to a digest reads back as another one (a registry that rewrote the manifest, or
    someone moving the tag at the same time). Names the tag, the digest expected and the one found."""

    def __init__(self, ref: str, expected: str, found: str | None):
        self.ref, self.expected, self.found = ref, expected, found
        super().__init__(f"{ref} became {found or 'nothing'}, not the tested {expected}")


class CredentialScopeError(PermanentError):
    """A registry Connection's secret would go to a host it was not made for (names connection and host).

    Retrying cannot fix this; the Connection's host (or the ``registry_connections`` mapping) must.
    """


class EngineError(ImageFactoryError):
    """The container engine is missing, unreachable, or refused an operation."""


class BuildFailed(EngineError):
    """An image build exited non-zero."""


class VerificationFailed(ImageFactoryError):
    """A check run inside a built image failed."""


class PromotionRefused(ImageFactoryError):
    """`latest` must not move: a test failed, or the tested digest is not what would be promoted."""


class SourceRepositoryError(ImageFactoryError):
    """The source repository or branch could not be read, or a constraints push failed."""


class SourceTreeInvalid(SourceRepositoryError, PermanentError):
    """The fetched sources are not an Apache Airflow checkout the images can be built from."""

    field = "source_repo"


class CommitNotOnBranch(SourceRepositoryError, PermanentError):
    """A commit_sha was asked for that is not on the branch the images are named after."""

    field = "commit_sha"


class BranchNotFound(SourceRepositoryError, PermanentError):
    """The branch does not exist in the source repository."""

    field = "branch"


class SourceRepositoryUnreadable(SourceRepositoryError, PermanentError):
    """The source repository cannot be read at all: no such repository, not a repository, no access."""

    field = "source_repo"


class BaseImageMissing(PermanentError):
    """An image the builds start FROM (the Python base) is not in its registry."""

    field = "python base image"


class RetagRefused(ImageFactoryError):
    """A retag cannot run as asked: a source image is missing, or a copy landed on another digest."""


class RetagSourceMissing(RetagRefused, PermanentError):
    """A source image of the retag does not exist: it stays missing however often the task retries."""

    field = "source_branch"


class ReleaseRefused(PermanentError):
    """A release cannot be published: bad version, a tested image is missing, or a tag would not point
    at the tested digest. A retry would publish from the same staged images, so none is made."""


class DependencyResolutionFailed(ImageFactoryError):
    """The resolver could not produce the newest allowed dependency set."""


class PromotionLockTimeout(PromotionRefused):
    """Another run held the promotion lock of the same registry/repository/branch past the timeout."""


class PromotionLockUnavailable(ImageFactoryError):
    """The promotion lock's PostgreSQL database cannot be used: unreachable, not PostgreSQL, no driver,
    or the lock was lost while held (the session died). Nothing is published without the lock held."""

    field = "promotion_lock"


# --- smoke deploys (deploy/) ---


class SmokeDeployError(ImageFactoryError):
    """A smoke deploy of the helm chart failed."""


class ChartInvalid(SmokeDeployError):
    """The chart does not render, lint or validate against the Kubernetes schema (names the object)."""


class DeployToolError(SmokeDeployError):
    """kind, helm or kubectl is missing, or exited non-zero."""


class HelmWaitTimeout(DeployToolError):
    """Helm gave up with "timed out waiting for the condition": the one Helm error worth retrying."""


class SmokeRunFailed(SmokeDeployError):
    """A rendered container exited, failed its job, or failed a readiness/liveness probe or the health check."""


# --- the package index (index.py) ---


class PackageIndexUnavailable(ImageFactoryError):
    """The package index did not answer a version lookup (network error, timeout, 5xx): names the index."""


class ProbeNotInstallable(PermanentError):
    """A bisection probe's upgrades cannot be installed together with the other current pins (one needs
    another's upgrade): no test ran, so it proves nothing either way; the search stops undecided."""


class TestsFailWithoutUpgrades(PermanentError):
    """A nightly's probes found the branch's tests failing with its current constraints, no upgrade
    installed: no hold can mend it, and as promotion is all or nothing, nothing of the branch is built."""


class RunNoteNotSet(ImageFactoryError):
    """The DAG run's note could not be written through Airflow's REST API (said in the log; the run goes on)."""


class EvidenceError(ImageFactoryError):
    """The signed evidence of an image (SBOM, provenance, test results) is missing, does not verify, or
    says something other than the image does: that digest is not promoted."""


class SigningKeyInvalid(EvidenceError, PermanentError):
    """The evidence signing key (an Airflow Connection) or a trusted public key is absent or unreadable:
    no retry mends it, and nothing is built for a run that could not publish."""

    field = "signing_connection"


class EvidenceRefused(EvidenceError, PermanentError):
    """An image's evidence was read and does not verify: another try reads the same (the task fails at once)."""
