"""The explicit registry: a detector that is not listed here does not exist.

The Detector protocol and option checking are in gateway/detectors/base.py.
"""

from __future__ import annotations

from gateway.detectors.abusive import Abusive
from gateway.detectors.adult_content import AdultContent
from gateway.detectors.antivirus import Antivirus
from gateway.detectors.auth import Auth
from gateway.detectors.base import Detector, OptionError, options_with_defaults
from gateway.detectors.chain_letter import ChainLetter
from gateway.detectors.commercial import Commercial
from gateway.detectors.confidential import Confidential
from gateway.detectors.credentials import Credentials
from gateway.detectors.encrypted import Encrypted
from gateway.detectors.external_email import ExternalEmail
from gateway.detectors.filetype import FileType
from gateway.detectors.mime import MimeStructure
from gateway.detectors.ocr import Ocr
from gateway.detectors.pii import Pii
from gateway.detectors.political import Political
from gateway.detectors.size import Size
from gateway.detectors.social_login import SocialLogin

__all__ = ["REGISTRY", "Detector", "OptionError", "options_with_defaults"]

REGISTRY: dict[str, type[Detector]] = {
    "size": Size,
    "mime": MimeStructure,
    "auth": Auth,
    "antivirus": Antivirus,
    "filetype": FileType,
    "encrypted": Encrypted,
    "confidential": Confidential,
    "pii": Pii,
    "credentials": Credentials,
    "ocr": Ocr,
    "adult_content": AdultContent,
    "commercial": Commercial,
    "political": Political,
    "abusive": Abusive,
    "chain_letter": ChainLetter,
    "social_login": SocialLogin,
    "external_email": ExternalEmail,
}
