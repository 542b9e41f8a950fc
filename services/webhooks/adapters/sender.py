"""One HTTP attempt at a receiver, safe against hostile URLs: the host is resolved and
every address checked (services/webhooks/domain.py) at each attempt, and the request goes
to the checked address itself (Host and TLS SNI name the host), so DNS cannot answer
differently between the check and the connection. No redirects, no proxies from the
environment, connect and read timeouts and an overall deadline; the response body is
read up to a small cap and dropped."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import httpx

from services.webhooks.domain import Target, UnsafeUrl, check_addresses, parse_target
from services.webhooks.messages import PostAnswer

RESOLVE_TIMEOUT_SECONDS = 5.0  # a slow resolver must not hold an API request or an attempt


async def resolve(target: Target, *, allow_private: bool) -> list[str]:
    """The target's addresses, all allowed by the policy (else :class:`UnsafeUrl`)."""
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            infos = await asyncio.get_running_loop().getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise UnsafeUrl(f"the host {target.host!r} does not resolve within {RESOLVE_TIMEOUT_SECONDS:g} s") from None
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeUrl(f"the host {target.host!r} does not resolve: {exc}") from None
    return check_addresses(target.host, (str(info[4][0]) for info in infos), allow_private=allow_private)


async def checked_target(url: str, *, allow_private: bool) -> tuple[Target, list[str]]:
    target = parse_target(url, allow_private=allow_private)
    return target, await resolve(target, allow_private=allow_private)


class Sender:
    def __init__(self, *, connect_timeout: float, timeout: float, response_cap: int, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.response_cap = response_cap
        self.deadline = connect_timeout + 2 * timeout  # whole attempt: a trickling receiver ends too
        self._http = httpx.AsyncClient(
            follow_redirects=False, trust_env=False, verify=True,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=0))

    async def close(self) -> None:
        await self._http.aclose()

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> PostAnswer:
        try:
            target, addresses = await checked_target(url, allow_private=self.allow_private)
        except UnsafeUrl as exc:
            return PostAnswer(False, None, f"refused: {exc}")
        address = addresses[0]
        literal = f"[{address}]" if isinstance(ipaddress.ip_address(address.split("%")[0]), ipaddress.IPv6Address) \
            else address
        default_port = 443 if target.scheme == "https" else 80
        host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
        pinned = httpx.URL(url).copy_with(host=literal.strip("[]"), port=target.port)
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            async with asyncio.timeout(self.deadline):
                request = self._http.build_request("POST", pinned, content=body, extensions=extensions,
                                                   headers={**headers, "Host": host_header})
                response = await self._http.send(request, stream=True)
                try:
                    snippet = await self._read_capped(response)
                finally:
                    await response.aclose()
        except TimeoutError:
            return PostAnswer(False, None, f"no answer within {self.deadline:g} s")
        except httpx.TimeoutException as exc:
            return PostAnswer(False, None, f"timed out: {type(exc).__name__}")
        except httpx.HTTPError as exc:
            return PostAnswer(False, None, f"{type(exc).__name__}: {exc}"[:300])
        code = response.status_code
        if 200 <= code < 300:
            return PostAnswer(True, code, None)
        if 300 <= code < 400:
            return PostAnswer(False, code, f"HTTP {code}: redirects are not followed")
        return PostAnswer(False, code, f"HTTP {code}: {snippet.decode('utf-8', 'replace')[:200]}".strip())

    async def _read_capped(self, response: httpx.Response) -> bytes:
        """At most ``response_cap`` bytes, raw (no decompression bomb); the rest is never read."""
        kept = b""
        async for chunk in response.aiter_raw():
            kept += chunk[: self.response_cap - len(kept)]
            if len(kept) >= self.response_cap:
                break
        return kept
