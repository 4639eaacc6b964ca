"""Handing mail and SMS to the delivery queue, and building the links they carry."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from authql.context import RequestContext
from authql.errors import ValidationFailed
from authql.services.mail import MailMessage
from authql.services.sms import SmsMessage


def check_return_url(
    ctx: RequestContext, url: str | None, *, field: str = "returnUrl"
) -> str | None:
    """``url`` if AUTHQL_ALLOWED_REDIRECTS lists it exactly or lists its origin; otherwise
    VALIDATION_ERROR (never an open redirect)."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        raise ValidationFailed("Return URL not allowed.", fields={field: "Not an allowed URL."})
    origin = f"{parts.scheme}://{parts.netloc}".lower()
    allowed = {entry.rstrip("/").lower() for entry in ctx.services.settings.allowed_redirects}
    if url.rstrip("/").lower() in allowed or origin in allowed:
        return url
    raise ValidationFailed("Return URL not allowed.", fields={field: "Not an allowed URL."})


#: The page each flow's link opens when neither the client nor the surface names one.
DEFAULT_PAGES = {
    "verify_email": "/verify-email",
    "password_reset": "/reset-password",
    "email_change_confirm": "/confirm-email",
    "magic_link": "/magic-link",
}


def link(
    ctx: RequestContext,
    base: str | None,
    token: str,
    return_url: str | None,
    *,
    page: str = "",
) -> str:
    """The URL a mail carries: the client's (validated) return URL, else the surface's
    default page, else ``<public url><page>``, with ``token`` added as a parameter."""
    target = return_url or base or ctx.services.settings.public_url + page
    separator = "&" if "?" in target else "?"
    return f"{target}{separator}{urlencode({'token': token})}"


def mail(ctx: RequestContext, to: str, template: str, **values: object) -> None:
    """Render ``template`` and queue it for ``to``; returns at once."""
    services = ctx.services
    rendered = services.templates.render(template, **values)
    message = MailMessage(to=to, subject=rendered.subject, text=rendered.text, html=rendered.html)
    services.delivery.submit("mail", lambda: services.mailer.send(message))


def text(ctx: RequestContext, to: str, template: str, **values: object) -> None:
    """Render ``template``'s text and queue it as an SMS to ``to``; returns at once."""
    services = ctx.services
    body = services.templates.render(template, **values).text
    message = SmsMessage(to=to, body=body)
    services.delivery.submit("sms", lambda: services.sms.send(message))


def minutes(seconds: int) -> int:
    return max(1, round(seconds / 60))
