"""Share links that only redirect (`on.soundcloud.com/x`): followed hop by hop, each hop checked.

urllib's own redirect handling would follow any Location header; here every hop must be on an allowed
host, and the final page is never requested.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable

from classifier import errors
from classifier.sources.platforms import SOUNDCLOUD_SHORT_HOST, from_url, is_allowed_url

__all__ = ["resolve_redirects", "resolve_share_link"]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None                         # hand every 3xx back to resolve_redirects, which checks each hop


def resolve_redirects(url: str, *, proxy_url: str, allowed: Callable[[str], bool], done: Callable[[str], bool],
                      timeout_s: float, max_hops: int = 5) -> str:
    """Follow redirects from `url` until `done(url)`, refusing (`errors.NotAllowed`) any hop not `allowed`."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy_url, "https": proxy_url}),
                                         _NoRedirect())
    for _ in range(max_hops):
        if done(url):
            return url
        request = urllib.request.Request(url)          # a 3xx body is tiny; the final page is never requested
        try:
            with opener.open(request, timeout=timeout_s) as response:
                final = response.url
            if final == url:
                raise errors.FetchFailed(detail="share link did not redirect")
            url = final
        except urllib.error.HTTPError as exc:
            with exc:
                location = exc.headers.get("Location")
                if exc.code not in (301, 302, 303, 307, 308) or not location:
                    raise (errors.Removed if exc.code in (404, 410) else errors.FetchFailed)(
                        detail=f"share link answered HTTP {exc.code}") from None
            url = urllib.parse.urljoin(url, location)
        if not allowed(url):
            raise errors.NotAllowed(detail=f"redirect to {urllib.parse.urlsplit(url).hostname}")
    if done(url):
        return url
    raise errors.FetchFailed(detail="too many redirects")


def resolve_share_link(url: str, proxy_url: str, extra_hosts: tuple[str, ...], timeout_s: float) -> str:
    """`on.soundcloud.com/x` -> the track's canonical URL, every hop on an allowed host."""
    final = resolve_redirects(url, proxy_url=proxy_url, allowed=lambda u: is_allowed_url(u, extra_hosts),
                              done=lambda u: urllib.parse.urlsplit(u).hostname != SOUNDCLOUD_SHORT_HOST,
                              timeout_s=min(timeout_s, 15.0))
    source = from_url(final)                # raises PlaylistRefused for a set, BadSource for a profile
    if source.platform != "soundcloud" or source.host == SOUNDCLOUD_SHORT_HOST:
        raise errors.NotAllowed(detail=f"share link led to {source.host}")
    return source.url
