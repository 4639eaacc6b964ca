"""Mail and SMS texts: built-in defaults an operator can override from a folder.

A template is a subject, a text part and an HTML part written with ``$name`` placeholders
(``string.Template``): ``$product``, ``$link``, ``$code``, ``$minutes``, ``$email`` and
whatever a flow adds. Overrides live in ``AUTHQL_TEMPLATES_DIR`` as ``<name>.subject.txt``,
``<name>.txt`` and ``<name>.html``; any missing part falls back to the default. Values are
HTML-escaped in the HTML part, so an address or URL can never inject markup.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from string import Template

_DEFAULTS: dict[str, tuple[str, str]] = {
    # name: (subject, text). The HTML part is derived from the text unless overridden.
    "verify_email": (
        "Confirm your email for $product",
        "Confirm your email address by opening this link:\n\n$link\n\n"
        "It expires in $minutes minutes. "
        "If you did not sign up for $product, ignore this mail.",
    ),
    "verify_email_code": (
        "Your $product verification code",
        "Your $product email verification code is $code. It expires in $minutes minutes.",
    ),
    "password_reset": (
        "Reset your $product password",
        "Someone asked to reset the password of your $product account.\n"
        "To choose a new password, open this link:\n\n$link\n\n"
        "It expires in $minutes minutes and works once. If it was not you, ignore this mail;"
        " your password stays as it is.",
    ),
    "email_change_confirm": (
        "Confirm your new email for $product",
        "Confirm that $email should become the address of your $product account:\n\n$link\n\n"
        "It expires in $minutes minutes. If you did not ask for this, ignore this mail.",
    ),
    "email_change_notice": (
        "Your $product email is being changed",
        "Someone asked to change the email of your $product account to $email.\n"
        "If this was not you, sign in and change your password now.",
    ),
    "email_changed_notice": (
        "Your $product email was changed",
        "The email address of your $product account is now $email.\n"
        "If this was not you, contact support at once.",
    ),
    "magic_link": (
        "Sign in to $product",
        "Open this link to sign in to $product:\n\n$link\n\n"
        "It expires in $minutes minutes and works once. If you did not ask for it, ignore "
        "this mail.",
    ),
    "link_account": (
        "Link your $provider account to $product",
        "Someone signed in with $provider using this address and asked to link it to your "
        "$product account. If that was you, open this link:\n\n$link\n\n"
        "It expires in $minutes minutes. If it was not you, ignore this mail.",
    ),
    "sms_code": ("", "$code is your $product code. It expires in $minutes minutes."),
    "email_code": (
        "Your $product code",
        "Your $product code is $code. It expires in $minutes minutes.",
    ),
}


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


class Templates:
    """Renders named templates, preferring the operator's folder over the defaults."""

    def __init__(self, folder: Path | None, product: str) -> None:
        self.folder = folder
        self.product = product

    def names(self) -> list[str]:
        return sorted(_DEFAULTS)

    def _part(self, name: str, suffix: str) -> str | None:
        if self.folder is None:
            return None
        path = self.folder / f"{name}{suffix}"
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def render(self, name: str, **values: object) -> Rendered:
        """The template ``name`` filled with ``values`` (plus ``product``)."""
        default_subject, default_text = _DEFAULTS[name]
        context = {"product": self.product, "code": "", "link": "", **values}
        strings = {key: str(value) for key, value in context.items()}
        escaped = {key: html.escape(value) for key, value in strings.items()}
        subject = self._part(name, ".subject.txt") or default_subject
        text = self._part(name, ".txt") or default_text
        html_source = self._part(name, ".html")
        if html_source is None:
            html_source = _html_from_text(Template(text).safe_substitute(escaped))
            html_body = html_source
        else:
            html_body = Template(html_source).safe_substitute(escaped)
        return Rendered(
            subject=Template(subject.strip()).safe_substitute(strings),
            text=Template(text).safe_substitute(strings),
            html=html_body,
        )


def _html_from_text(escaped_text: str) -> str:
    paragraphs = "".join(
        f"<p>{_linkify(block).replace(chr(10), '<br>')}</p>"
        for block in escaped_text.split("\n\n")
        if block.strip()
    )
    return f"<!doctype html><html><body>{paragraphs}</body></html>"


def _linkify(block: str) -> str:
    stripped = block.strip()
    if stripped.startswith(("https://", "http://")) and " " not in stripped:
        return f'<a href="{stripped}">{stripped}</a>'
    return block
