"""DingTalk, WeCom, Feishu and email, each against a loopback receiver that checks what
the vendor checks: DingTalk's and Feishu's signatures (computed here, independently, from
each vendor's documented recipe), WeCom's key, an SMTP server's STARTTLS or TLS and login.
Firing and resolved, in English and Chinese."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import hmac
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from tests.receiver import Received, Receiver
from tests.test_notifiers import NOW, make_notification
from tracklane.alerts.model import NotificationKind
from tracklane.alerts.notifiers import NotifyError, send
from tracklane.alerts.rules import NotifierSpec
from tracklane.broker import free_port

pytestmark = pytest.mark.anyio

SECRET = "SECb1f0c2d9e8a7f6e5d4c3b2a1"  # DingTalk shows its secrets with this prefix
FEISHU_SECRET = "qT9tXrVh4jJ6gKd1Ae7Pz"
WECOM_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
HOUR_MS = 3_600_000


def firing() -> Any:
    return make_notification()


def resolved() -> Any:
    return make_notification(NotificationKind.RESOLVED)


# -- DingTalk ----------------------------------------------------------------------------


def dingtalk_verdict(secret: str) -> Any:
    """DingTalk's check of a signed robot call ("加签"): the URL's timestamp (ms, within an
    hour) and sign = urlencode(base64(HmacSHA256(key=secret, "timestamp\\nsecret")))."""
    def answer(got: Received) -> tuple[int, dict[str, Any]]:
        query = parse_qs(urlsplit(got.path).query)
        if query.get("access_token") != ["tok"]:
            return 200, {"errcode": 300001, "errmsg": "token is not exist"}
        stamp = query.get("timestamp", [""])[0]
        if not stamp.isdigit() or abs(int(stamp) - NOW.timestamp() * 1000) > HOUR_MS:
            return 200, {"errcode": 310000, "errmsg": "timestamp is invalid"}
        digest = hmac.new(secret.encode("utf-8"), f"{stamp}\n{secret}".encode(),
                          digestmod=hashlib.sha256).digest()
        # parse_qs has URL-decoded the sign already.
        if query.get("sign") != [base64.b64encode(digest).decode()]:
            return 200, {"errcode": 310000, "errmsg": "sign not match"}
        return 200, {"errcode": 0, "errmsg": "ok"}
    return answer


async def test_dingtalk_is_signed_as_dingtalk_checks() -> None:
    with Receiver(dingtalk_verdict(SECRET)).running() as robot:
        spec = NotifierSpec(name="dd", kind="dingtalk",
                            url=f"{robot.url}/robot/send?access_token=tok", secret=SECRET,
                            at_mobiles=["13800000000"], locale="zh-CN")
        async with httpx.AsyncClient() as client:
            await send(client, spec, firing(), NOW)
            await send(client, spec, resolved(), NOW)
        fired, cleared = robot.payloads()
    assert fired["msgtype"] == "markdown"
    assert fired["markdown"]["title"] == "[告警] 严重 checkout (demo)"
    text = fired["markdown"]["text"]
    assert "purchase/add_to_cart 1.5% vs 3.0%" in text and "**观测值**: 0.015" in text
    assert "[处理手册](https://rb.example/checkout)" in text
    # The mobile is called in the firing message, and named in its text as DingTalk needs.
    assert fired["at"] == {"atMobiles": ["13800000000"], "isAtAll": False}
    assert text.endswith("@13800000000")
    assert cleared["markdown"]["title"] == "[已恢复] 严重 checkout (demo)"
    assert cleared["at"] == {"isAtAll": False} and "@1380" not in cleared["markdown"]["text"]


async def test_dingtalk_refusals_are_errors_though_the_status_is_200() -> None:
    with Receiver(dingtalk_verdict("SECsomething-else")).running() as robot:
        spec = NotifierSpec(name="dd", kind="dingtalk",
                            url=f"{robot.url}/robot/send?access_token=tok", secret=SECRET)
        async with httpx.AsyncClient() as client:
            with pytest.raises(NotifyError, match="310000: sign not match") as bad:
                await send(client, spec, firing(), NOW)
    assert not bad.value.retryable
    too_fast = Receiver(lambda got: (200, {"errcode": 130101, "errmsg": "send too fast"}))
    with too_fast.running() as robot:
        spec = NotifierSpec(name="dd", kind="dingtalk",
                            url=f"{robot.url}/robot/send?access_token=t")
        async with httpx.AsyncClient() as client:
            with pytest.raises(NotifyError, match="130101") as slow:
                await send(client, spec, firing(), NOW)
    assert slow.value.retryable


# -- WeCom -------------------------------------------------------------------------------


def wecom_verdict(got: Received) -> tuple[int, dict[str, Any]]:
    """WeCom's group robot: the key in the URL is the credential; markdown content."""
    if parse_qs(urlsplit(got.path).query).get("key") != [WECOM_KEY]:
        return 200, {"errcode": 93000, "errmsg": "invalid webhook url"}
    body = got.json()
    if body.get("msgtype") != "markdown" or not body["markdown"].get("content"):
        return 200, {"errcode": 40008, "errmsg": "invalid message type"}
    return 200, {"errcode": 0, "errmsg": "ok"}


async def test_wecom_sends_markdown_with_its_key() -> None:
    with Receiver(wecom_verdict).running() as robot:
        url = f"{robot.url}/cgi-bin/webhook/send?key={WECOM_KEY}"
        async with httpx.AsyncClient() as client:
            await send(client, NotifierSpec(name="wx", kind="wecom", url=url), firing(), NOW)
            await send(client, NotifierSpec(name="wx", kind="wecom", url=url, locale="zh-CN"),
                       resolved(), NOW)
            with pytest.raises(NotifyError, match="93000"):
                await send(client, NotifierSpec(name="wx", kind="wecom", url=url + "x"),
                           firing(), NOW)
        fired, cleared = robot.payloads()[:2]
    assert fired["markdown"]["content"].startswith(
        '### <font color="warning">[FIRING] critical checkout (demo)</font>')
    assert '> Observed: <font color="comment">0.015</font>' in fired["markdown"]["content"]
    assert cleared["markdown"]["content"].startswith(
        '### <font color="info">[已恢复] 严重 checkout (demo)</font>')


# -- Feishu ------------------------------------------------------------------------------


def feishu_verdict(secret: str) -> Any:
    """Feishu's signature check ("签名校验"): the body's timestamp (s, within an hour) and
    sign = base64(HmacSHA256(key="timestamp\\nsecret", message="")), as its docs give."""
    def answer(got: Received) -> tuple[int, dict[str, Any]]:
        body = got.json()
        stamp = str(body.get("timestamp", ""))
        key = f"{stamp}\n{secret}".encode()
        expected = base64.b64encode(
            hmac.new(key, b"", digestmod=hashlib.sha256).digest()).decode()
        if (not stamp.isdigit() or abs(int(stamp) - NOW.timestamp()) > 3600
                or body.get("sign") != expected):
            return 200, {"code": 19021, "msg": "sign match fail or timestamp is not within "
                                                "one hour from current time", "data": {}}
        if body.get("msg_type") != "interactive":
            return 200, {"code": 9499, "msg": "Bad Request", "data": {}}
        return 200, {"code": 0, "msg": "success", "data": {}}
    return answer


async def test_feishu_sends_a_signed_card() -> None:
    with Receiver(feishu_verdict(FEISHU_SECRET)).running() as bot:
        spec = NotifierSpec(name="fs", kind="feishu", url=f"{bot.url}/open-apis/bot/v2/hook/x",
                            secret=FEISHU_SECRET)
        async with httpx.AsyncClient() as client:
            await send(client, spec, firing(), NOW)
            await send(client, spec, resolved(), NOW)
            wrong = NotifierSpec(name="fs", kind="feishu", url=spec.url, secret="nope")
            with pytest.raises(NotifyError, match="19021") as bad:
                await send(client, wrong, firing(), NOW)
        fired, cleared = bot.payloads()[:2]
    assert not bad.value.retryable
    card = fired["card"]
    assert card["header"] == {"title": {"tag": "plain_text",
                                        "content": "[FIRING] critical checkout (demo)"},
                              "template": "red"}
    assert "**Observed**: 0.015" in card["elements"][2]["text"]["content"]
    assert [b["url"] for b in card["elements"][3]["actions"]] == [
        "https://rb.example/checkout", "https://grafana.example/d/x"]
    assert cleared["card"]["header"]["template"] == "green"


# -- email -------------------------------------------------------------------------------


@dataclass
class Mailbox:
    """What the SMTP server took: each message with its envelope and the login used."""

    messages: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTPServer, session: Session,
                          envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((str(envelope.mail_from), list(envelope.rcpt_tos), parsed))
        return "250 OK"

    def authenticate(self, server: SMTPServer, session: Session, envelope: Envelope,
                     mechanism: str, auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((login, password))
        # handled=False: aiosmtpd itself answers a failure, 535.
        return AuthResult(success=(login, password) == ("alerts@shop.example", "s3cret"),
                          handled=False)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ssl.SSLContext, Path]]:
    """A certificate for 127.0.0.1 from a CA of the test's own, and that CA's file."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    yield server, ca_file


def smtp_server(mailbox: Mailbox, context: ssl.SSLContext, implicit_tls: bool) -> Controller:
    """aiosmtpd on loopback: STARTTLS required before AUTH, AUTH required before mail
    (or TLS from the first byte)."""
    port = free_port()
    if implicit_tls:
        # The connection is TLS from the start: aiosmtpd's auth_require_tls looks for
        # STARTTLS only.
        return Controller(mailbox, hostname="127.0.0.1", port=port, ssl_context=context,
                          authenticator=mailbox.authenticate, auth_required=True,
                          auth_require_tls=False)
    return Controller(mailbox, hostname="127.0.0.1", port=port, tls_context=context,
                      require_starttls=True, authenticator=mailbox.authenticate,
                      auth_required=True, auth_require_tls=True)


def email_spec(controller: Controller, ca_file: Path, security: str,
               password: str = "s3cret", locale: str = "en") -> NotifierSpec:
    return NotifierSpec.model_validate({
        "name": "mail", "kind": "email", "locale": locale,
        "email": {"host": "127.0.0.1", "port": controller.port, "security": security,
                  "username": "alerts@shop.example", "password": password,
                  "from": "Tracklane <alerts@shop.example>",
                  "to": ["oncall@shop.example", "lead@shop.example"], "ca_file": str(ca_file)}})


# aiosmtpd cannot tell a TLS-from-the-start session is TLS, and warns that AUTH is allowed
# without it.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_email_logs_in_over_tls_and_sends_text_and_html(
        tls: tuple[ssl.SSLContext, Path], security: str) -> None:
    context, ca_file = tls
    mailbox = Mailbox()
    controller = smtp_server(mailbox, context, implicit_tls=security == "tls")
    controller.start()
    try:
        async with httpx.AsyncClient() as client:
            await send(client, email_spec(controller, ca_file, security), firing(), NOW)
            await send(client, email_spec(controller, ca_file, security, locale="zh-CN"),
                       resolved(), NOW)
    finally:
        controller.stop()
    assert mailbox.logins == [("alerts@shop.example", "s3cret")] * 2
    (sender, recipients, fired), (_, _, cleared) = mailbox.messages
    assert sender == "alerts@shop.example"
    assert recipients == ["oncall@shop.example", "lead@shop.example"]
    assert fired["Subject"] == "[FIRING] critical checkout (demo)"
    assert fired["To"] == "oncall@shop.example, lead@shop.example"
    text = fired.get_body(("plain",))
    page = fired.get_body(("html",))
    assert text is not None and page is not None
    assert "purchase/add_to_cart 1.5% vs 3.0%" in text.get_content()
    assert "Observed" in text.get_content() and "0.015" in text.get_content()
    assert '<a href="https://rb.example/checkout">Runbook</a>' in page.get_content()
    assert cleared["Subject"] == "[已恢复] 严重 checkout (demo)"
    zh_text = cleared.get_body(("plain",))
    assert zh_text is not None and "恢复时间" in zh_text.get_content()


async def test_email_with_a_wrong_password_is_refused_for_good(
        tls: tuple[ssl.SSLContext, Path]) -> None:
    context, ca_file = tls
    mailbox = Mailbox()
    controller = smtp_server(mailbox, context, implicit_tls=False)
    controller.start()
    try:
        async with httpx.AsyncClient() as client:
            with pytest.raises(NotifyError, match="SMTP 535") as refused:
                await send(client, email_spec(controller, ca_file, "starttls", password="no"),
                           firing(), NOW)
    finally:
        controller.stop()
    assert not refused.value.retryable and mailbox.messages == []


def test_notifier_settings_are_checked() -> None:
    for bad, message in [
        ({"name": "x", "kind": "dingtalk"}, "url: required"),
        ({"name": "x", "kind": "email"}, "email: required"),
        ({"name": "x", "kind": "wecom", "url": "https://q.example", "at_all": True},
         "only for a dingtalk"),
        ({"name": "x", "kind": "email", "email": {"host": "h", "from": "a@b", "to": ["c@d"],
                                                    "username": "u"}}, "give both"),
    ]:
        with pytest.raises(ValueError, match=message):
            NotifierSpec.model_validate(bad)
    assert json.loads(NotifierSpec(name="x", kind="feishu", url="https://f.example")
                      .model_dump_json())["locale"] == "en"
