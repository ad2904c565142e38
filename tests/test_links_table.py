"""The link table: every single-track form in yt-dlp's own extractor tests, what people type in chat around
them, and the refusals, each through `spy link --json` exactly as an operator would run it.

One `spy link` call reads the whole table (one JSON object a line); each row then checks its line. A row is
`(text, expected)`: `("youtube", URL, start)` / `("soundcloud", ...)` / `("extra", ...)` for an understood
link, `(CODE, PHRASE)` for a refusal whose sentence contains PHRASE.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spy.cli import main

ROOT = Path(__file__).resolve().parents[1]
ID = "dQw4w9WgXcQ"
W = f"https://www.youtube.com/watch?v={ID}"
YT = f"https://youtu.be/{ID}"
SC = "https://soundcloud.com/dj-x/deep-house-mix-2024"
EXTRA = "127.0.0.1:8765"


def w(video_id: str) -> str:
    return f"https://www.youtube.com/watch?v={video_id}"


OK = tuple  # (platform, url, start_s)
ROWS: list[tuple[str, tuple]] = [
    # --- YouTube: the single-video forms of yt-dlp's extractor tests ---------------------------------------
    (f"https://www.youtube.com/watch?v={ID}", ("youtube", W, None)),
    (f"http://www.youtube.com/watch?v={ID}", ("youtube", W, None)),
    ("//www.YouTube.com/watch?v=yZIXLfi8CZQ", ("youtube", w("yZIXLfi8CZQ"), None)),
    (f"https://youtube.com/watch?v={ID}", ("youtube", W, None)),
    (f"https://m.youtube.com/watch?v={ID}", ("youtube", W, None)),
    ("https://music.youtube.com/watch?v=DbCvuSGfR3Y", ("youtube", w("DbCvuSGfR3Y"), None)),
    ("https://www.youtubekids.com/watch?v=3b8nCWDgZ6Q", ("youtube", w("3b8nCWDgZ6Q"), None)),
    ("https://www.youtubekids.com/watch?v=Agk7R8I8o5U&list=PUZ6jURNr1WQZCNHF0ao-c0g", ("youtube", w("Agk7R8I8o5U"), None)),
    (f"https://www.youtube.com/watch?v={ID}&feature=youtu.be", ("youtube", W, None)),
    ("https://www.youtube.com/watch?feature=player_embedded&amp;amp;v=V36LpHqtcDY", ("youtube", w("V36LpHqtcDY"), None)),
    ("https://www.youtube.com/watch?v=YE7VzlLtp-4&t=1s&end=9", ("youtube", w("YE7VzlLtp-4"), 1)),
    ("https://www.youtube.com/watch?v=YE7VzlLtp-4&v=BaW_jenozKc", ("youtube", w("YE7VzlLtp-4"), None)),
    ("https://www.youtube.com/watch_popup?v=63RmMXCd_bQ", ("youtube", w("63RmMXCd_bQ"), None)),
    (f"https://www.youtube.com/?v={ID}", ("youtube", W, None)),
    (f"https://www.youtube.com/?feature=share&v={ID}", ("youtube", W, None)),
    (f"https://www.youtube.com/watch#!v={ID}", ("youtube", W, None)),
    (f"https://www.youtube.com/#/watch?v={ID}", ("youtube", W, None)),
    (f"https://www.youtube.com/watch.php?v={ID}", ("youtube", W, None)),
    ("https://www.youtube.com/attribution_link?a=JdfC0C9V6ZI&u=%2Fwatch%3Fv%3DEhxJLojIE_o%26feature%3Dshare",
     ("youtube", w("EhxJLojIE_o"), None)),
    ("https://www.youtube.com/clip/UgytZKpehg-hEMBSn3F4AaABCQ",
     ("youtube", "https://www.youtube.com/clip/UgytZKpehg-hEMBSn3F4AaABCQ", None)),
    ("https://youtube.com/clip/UgkxU2HSeGL_NvmDJ-nQJrlLwllwMlI1cHbL?si=abc",
     ("youtube", "https://www.youtube.com/clip/UgkxU2HSeGL_NvmDJ-nQJrlLwllwMlI1cHbL", None)),
    ("https://www.youtube.com/embed/CsmdDsKjzN8", ("youtube", w("CsmdDsKjzN8"), None)),
    (f"https://www.youtube-nocookie.com/embed/{ID}?start=62", ("youtube", W, 62)),
    ("http://www.youtube.com/embed/_xDOZElKyNU?list=PLsyOSbh5bs16vubvKePAQ1x3PhKavfBIl", ("youtube", w("_xDOZElKyNU"), None)),
    (f"https://www.youtube.com/v/{ID}?version=3&autohide=1", ("youtube", W, None)),
    (f"https://www.youtube.com/v/{ID}&hl=en_US&fs=1", ("youtube", W, None)),
    (f"https://www.youtube.com/e/{ID}", ("youtube", W, None)),
    ("https://youtube.googleapis.com/v/BaW_jenozKc", ("youtube", w("BaW_jenozKc"), None)),
    ("https://www.youtube.com/shorts/BGQWPY4IigY", ("youtube", w("BGQWPY4IigY"), None)),
    ("https://youtube.com/shorts/sSM9J5YH_60?feature=share", ("youtube", w("sSM9J5YH_60"), None)),
    ("https://www.youtube.com/live/qVv6vCqciTM", ("youtube", w("qVv6vCqciTM"), None)),
    (f"https://youtube.com/live/{ID}?feature=share&t=90", ("youtube", W, 90)),
    ("https://consent.youtube.com/m?continue=https%3A%2F%2Fwww.youtube.com%2Flive%2FqVv6vCqciTM%3Fcbrd%3D1"
     "&gl=NL&m=0&pc=yt&hl=en&src=1", ("youtube", w("qVv6vCqciTM"), None)),
    ("https://youtu.be/uWyaPkt-VOI?list=PL9D9FC436B881BA21", ("youtube", w("uWyaPkt-VOI"), None)),
    ("https://www.youtube.com/watch?v=FqZTN594JQw&list=PLMYEtVRpaqY00V9W81Cwmzp6N6vZqfUKD4", ("youtube", w("FqZTN594JQw"), None)),
    ("https://www.youtube.com/watch?v=MuAGGZNfUkU&list=RDMM", ("youtube", w("MuAGGZNfUkU"), None)),
    ("https://www.youtube.com/watch?list=PLW4dVinRY435CBE_JD3t-0SRXKfnZHS1P&feature=youtu.be&v=M9cJMXmQ_ZU",
     ("youtube", w("M9cJMXmQ_ZU"), None)),
    (f"https://www.youtube.com/watch?v={ID}&pp=ygUEdGVzdA%3D%3D", ("youtube", W, None)),
    # share links as apps copy them, and as people write them
    (YT, ("youtube", W, None)),
    (f"{YT}?si=AbCdEf123_-xyz", ("youtube", W, None)),
    (f"youtu.be/{ID}", ("youtube", W, None)),
    (f"www.youtube.com/watch?v={ID}", ("youtube", W, None)),
    (f"youtube.com/watch?v={ID}&t=62m3s", ("youtube", W, 3723)),
    (f"HTTPS://YOUTU.BE/{ID}", ("youtube", W, None)),
    (f"https://www.youtu.be/{ID}", ("youtube", W, None)),
    # times inside the link, including the ones added by hand
    (f"{YT}?t=1h2m3s", ("youtube", W, 3723)), (f"{YT}?t=3723", ("youtube", W, 3723)),
    (f"{YT}?t=3723s", ("youtube", W, 3723)), (f"{YT}?t=62m3s", ("youtube", W, 3723)),
    (f"{YT}?t=1:02:03", ("youtube", W, 3723)), (f"{YT}?t=1%3A02%3A03", ("youtube", W, 3723)),
    (f"{W}&t=1m30", ("youtube", W, 90)), (f"{W}&start=90", ("youtube", W, 90)),
    (f"{W}&time_continue=90", ("youtube", W, 90)), (f"{W}#t=1m30s", ("youtube", W, 90)),
    (f"{W}?t=90", ("youtube", W, 90)), (f"{YT}&t=90", ("youtube", W, 90)),
    (f"{YT}?si=AbCdEf?t=90", ("youtube", W, 90)), (f"{W}/", ("youtube", W, None)),
    (f"{W}/&t=90", ("youtube", W, 90)), (f"{YT}/", ("youtube", W, None)),
    # --- SoundCloud ------------------------------------------------------------------------------------
    ("http://soundcloud.com/ethmusic/lostin-powers-she-so-heavy",
     ("soundcloud", "https://soundcloud.com/ethmusic/lostin-powers-she-so-heavy", None)),
    ("https://soundcloud.com/jaimemf/youtube-dl-test-video-a-y-baw/s-8Pjrp",
     ("soundcloud", "https://soundcloud.com/jaimemf/youtube-dl-test-video-a-y-baw/s-8Pjrp", None)),
    ("https://soundcloud.com/oriuplift/uponly-238-no-talking-wav/s-AyZUd",
     ("soundcloud", "https://soundcloud.com/oriuplift/uponly-238-no-talking-wav/s-AyZUd", None)),
    ("https://soundcloud.com/the80m/the-following", ("soundcloud", "https://soundcloud.com/the80m/the-following", None)),
    ("https://soundcloud.com/wandw/the-chainsmokers-ft-daya-dont-let-me-down-ww-remix-1",
     ("soundcloud", "https://soundcloud.com/wandw/the-chainsmokers-ft-daya-dont-let-me-down-ww-remix-1", None)),
    ("https://api.soundcloud.com/tracks/123998367?secret_token=s-8Pjrp",
     ("soundcloud", "https://api.soundcloud.com/tracks/123998367?secret_token=s-8Pjrp", None)),
    ("https://api.soundcloud.com/tracks/123998367", ("soundcloud", "https://api.soundcloud.com/tracks/123998367", None)),
    ("https://api.soundcloud.com/tracks/soundcloud%3Atracks%3A1083788353",
     ("soundcloud", "https://api.soundcloud.com/tracks/1083788353", None)),
    ("https://api-v2.soundcloud.com/tracks/1083788353", ("soundcloud", "https://api.soundcloud.com/tracks/1083788353", None)),
    ("https://w.soundcloud.com/player/?url=https%3A//api.soundcloud.com/tracks/123998367&auto_play=false",
     ("soundcloud", "https://api.soundcloud.com/tracks/123998367", None)),
    ("https://w.soundcloud.com/player/?url=https%3A%2F%2Fapi.soundcloud.com%2Ftracks%2F922213810&secret_token=s-ziYey",
     ("soundcloud", "https://api.soundcloud.com/tracks/922213810?secret_token=s-ziYey", None)),
    (SC, ("soundcloud", SC, None)), (f"{SC}/", ("soundcloud", SC, None)),
    ("https://m.soundcloud.com/dj-x/deep-house-mix-2024", ("soundcloud", SC, None)),
    ("https://www.soundcloud.com/dj-x/deep-house-mix-2024", ("soundcloud", SC, None)),
    ("soundcloud.com/dj-x/deep-house-mix-2024", ("soundcloud", SC, None)),
    (f"{SC}?in=dj-x/sets/summer", ("soundcloud", SC, None)),
    (f"{SC}?si=0123abcd&utm_source=clipboard&utm_medium=text&utm_campaign=social_sharing", ("soundcloud", SC, None)),
    (f"{SC}#t=1:02:03", ("soundcloud", SC, 3723)), (f"{SC}#t=62:03", ("soundcloud", SC, 3723)),
    (f"{SC}#t=90", ("soundcloud", SC, 90)), (f"{SC}?t=90", ("soundcloud", SC, 90)),
    ("https://soundcloud.com/dj_/set_", ("soundcloud", "https://soundcloud.com/dj_/set_", None)),
    ("https://soundcloud.com/dj/set__", ("soundcloud", "https://soundcloud.com/dj/set__", None)),
    ("https://soundcloud.com/dj/set-", ("soundcloud", "https://soundcloud.com/dj/set-", None)),
    ("https://on.soundcloud.com/AbC123xyz", ("soundcloud", "https://on.soundcloud.com/AbC123xyz", None)),
    # --- around the link: chat punctuation, markup, emoji, CJK ------------------------------------------
    (f"who is this? {YT}🔥", ("youtube", W, None)), (f"{YT}🔥🔥", ("youtube", W, None)),
    (f"{YT}。", ("youtube", W, None)), (f"{YT}，谁的？", ("youtube", W, None)), (f"这是谁的{YT}？", ("youtube", W, None)),
    (f"{YT}！", ("youtube", W, None)), (f"«{YT}»", ("youtube", W, None)), (f"「{YT}」", ("youtube", W, None)),
    (f"{YT}\u00a0please", ("youtube", W, None)), (f"{YT}\u200b", ("youtube", W, None)),
    (f"[{YT}]({YT})", ("youtube", W, None)), (f"[the set]({YT}?t=90)", ("youtube", W, 90)),
    (f"[{SC}]({SC})", ("soundcloud", SC, None)),
    (f"<{YT}>", ("youtube", W, None)), (f"({YT})", ("youtube", W, None)), (f"{YT}.", ("youtube", W, None)),
    (f"{YT},", ("youtube", W, None)), (f"{YT}!", ("youtube", W, None)), (f"{YT}?", ("youtube", W, None)),
    (f"{YT}...", ("youtube", W, None)), (f"**{YT}**", ("youtube", W, None)), (f"_{YT}_", ("youtube", W, None)),
    (f"~~{YT}~~", ("youtube", W, None)), (f'"{YT}"', ("youtube", W, None)), (f"'{YT}'", ("youtube", W, None)),
    ("_https://soundcloud.com/dj/set__", ("soundcloud", "https://soundcloud.com/dj/set_", None)),
    (f"link:{YT}", ("youtube", W, None)), (f"{YT}\r\nHost: evil.example", ("youtube", W, None)),
    (f"{YT}%0d%0aHost:%20evil", ("youtube", W, None)),
    (f"<@123456789> {YT}", ("youtube", W, None)),
    # --- times typed with the link --------------------------------------------------------------------------
    (f"{SC} 1:02:03", ("soundcloud", SC, 3723)), (f"who is this at 62:03? {YT}", ("youtube", W, 3723)),
    (f"1:02:03 {YT}", ("youtube", W, 3723)), (f"{YT} at 1:02:03", ("youtube", W, 3723)),
    (f"{YT} 1:02:03 please", ("youtube", W, 3723)), (f"{YT} 90sec", ("youtube", W, 90)),
    (f"/identify {YT} 1h 2m 3s", ("youtube", W, 3723)), (f"/identify {YT} 1h02m03s", ("youtube", W, 3723)),
    (f"{YT} @1:02:03", ("youtube", W, 3723)), (f"from 1m30 {YT}", ("youtube", W, 90)),
    (f"{YT} t=3723", ("youtube", W, 3723)), (f"{YT} 3723", ("youtube", W, 3723)), (f"{YT} 90s", ("youtube", W, 90)),
    (f"{YT}?t=10 at 1:00", ("youtube", W, 60)), (f"top 10 tracks of 2024 {YT}", ("youtube", W, None)),
    (f"that 90s vibe {YT}", ("youtube", W, None)),
    # --- operator-added hosts (SPY_FETCH_EXTRA_HOSTS) ---------------------------------------------------------
    (f"http://{EXTRA}/set.mp3#t=1:02:03", ("extra", f"http://{EXTRA}/set.mp3", 3723)),
    (f"http://{EXTRA}/a.mp3?k=v", ("extra", f"http://{EXTRA}/a.mp3?k=v", None)),
    (f"http://{EXTRA}/set.mp3 at 5:00", ("extra", f"http://{EXTRA}/set.mp3", 300)),
    # --- refused: playlists, sets, channels, profiles ------------------------------------------------------------
    ("https://www.youtube.com/playlist?list=PL4lCao7KL_QFodcLWhDpGCYnngnHtQ-Xf", ("playlist", "playlist or a set")),
    ("https://music.youtube.com/playlist?list=PLRBp0Fe2GpgmgoscNFLxNyBVSFVdYmFkq", ("playlist", "playlist or a set")),
    ("https://www.youtube.com/embed/videoseries?list=PL6IaIsEjSbf96XFRuNccS_RuEXwNdsoEu", ("playlist", "playlist or a set")),
    ("https://www.youtube.com/embed/live_stream?channel=UC2_KI6RB__jGdlnK6dvFEZA", ("playlist", "channel's live stream")),
    ("https://www.youtube.com/source/Lyj-MZSAA9o/shorts", ("playlist", "playlist or a set")),
    ("https://www.youtube.com/@3blue1brown", ("playlist", "YouTube channel, not a video")),
    ("https://www.youtube.com/@NotJustBikes/shorts", ("playlist", "YouTube channel, not a video")),
    ("https://www.youtube.com/channel/UC-lHJZR3Gqxm24_Vd_AJ5Yw", ("playlist", "YouTube channel, not a video")),
    ("https://www.youtube.com/channel/UC1yBKRuGpC1tSM73A0ZjYjQ/live", ("playlist", "YouTube channel, not a video")),
    ("https://www.youtube.com/c/ChristophLaimer/playlists", ("playlist", "YouTube channel, not a video")),
    ("https://www.youtube.com/user/TheYoungTurks/live", ("playlist", "YouTube channel, not a video")),
    ("https://www.youtubekids.com/channel/UCmlqkdCBesrv2Lak1mF_MxA", ("playlist", "YouTube channel, not a video")),
    ("https://soundcloud.com/soft-cell-official", ("playlist", "SoundCloud profile, not a track")),
    ("https://soundcloud.com/soft-cell-official/tracks", ("playlist", "playlist or a set")),
    ("https://soundcloud.com/soft-cell-official/albums", ("playlist", "playlist or a set")),
    ("https://soundcloud.com/jcv246/sets", ("playlist", "playlist or a set")),
    ("https://soundcloud.com/the-concept-band/sets/the-royal-concept-ep", ("playlist", "playlist or a set")),
    ("https://soundcloud.com/the-concept-band/sets/the-royal-concept-ep/token", ("playlist", "playlist or a set")),
    ("https://soundcloud.com/clalberg/likes", ("playlist", "playlist or a set")),
    ("https://soundcloud.com/jcv246/reposts", ("playlist", "playlist or a set")),
    ("https://soundcloud.com/grynpyret/spotlight", ("playlist", "playlist or a set")),
    ("https://soundcloud.com/wajang/sexapil-pingers-5/recommended", ("playlist", "playlist or a set")),
    ("https://soundcloud.com/wajang/sexapil-pingers-5/albums", ("playlist", "playlist or a set")),
    ("https://soundcloud.com/wajang/sexapil-pingers-5/sets", ("playlist", "playlist or a set")),
    ("https://soundcloud.com/stations/track/officialsundial/your-text", ("playlist", "playlist or a set")),
    ("https://api.soundcloud.com/playlists/4110309", ("playlist", "playlist or a set")),
    ("https://api.soundcloud.com/users/30909869", ("playlist", "playlist or a set")),
    ("https://w.soundcloud.com/player/?visual=true&url=https%3A%2F%2Fapi.soundcloud.com%2Fplaylists%2F922213810",
     ("playlist", "playlist or a set")),
    # --- refused: platform pages that are no video or track, and links cut off -------------------------------------
    ("https://www.youtube.com/", ("bad_source", "does not point at a video")),
    ("https://youtube.com", ("bad_source", "does not point at a video")),
    ("https://www.youtube.com/feed/trending", ("bad_source", "does not point at a video")),
    ("https://www.youtube.com/results?search_query=deep+house", ("bad_source", "does not point at a video")),
    ("https://www.youtube.com/hashtag/cctv9", ("bad_source", "does not point at a video")),
    ("https://www.youtube.com/watch?", ("bad_source", "does not point at a video")),
    ("https://www.youtube.com/watch?feature=foo", ("bad_source", "does not point at a video")),
    ("https://www.youtube.com/watch?t=2372", ("bad_source", "does not point at a video")),
    ("https://www.youtube.com/attribution_link?a=JdfC0C9V6ZI", ("bad_source", "does not point at a video")),
    ("https://www.youtube.com/watch?v=N_708QY7Ob", ("bad_source", "looks cut off")),
    ("https://youtu.be/dQw4w9", ("bad_source", "looks cut off")),
    (f"https://www.youtube.com/watch?v={ID}123", ("bad_source", "looks cut off")),
    ("https://www.youtube.com/clip/abc", ("bad_source", "looks cut off")),
    ("https://soundcloud.com/discover", ("bad_source", "not a track")),
    ("https://soundcloud.com/discover/sets/charts-top:all-music:de", ("bad_source", "not a track")),
    ("https://on.soundcloud.com/", ("bad_source", "share link looks cut off")),
    # --- refused: other hosts, tricks, private addresses, other schemes ------------------------------------------
    ("https://vimeo.com/12345", ("not_allowed", "only fetch audio from YouTube and SoundCloud")),
    ("https://open.spotify.com/track/4uLU6hMCjMI75M1A2tKUQC", ("not_allowed", "only fetch audio")),
    ("https://artist.bandcamp.com/track/x", ("not_allowed", "only fetch audio")),
    ("https://www.mixcloud.com/dj/set/", ("not_allowed", "only fetch audio")),
    ("https://invidio.us/watch?v=YE7VzlLtp-4", ("not_allowed", "only fetch audio")),
    ("https://yewtu.be/watch?v=YE7VzlLtp-4", ("not_allowed", "only fetch audio")),
    ("https://redirect.invidious.io/watch?v=YE7VzlLtp-4", ("not_allowed", "only fetch audio")),
    ("https://www.youtube.com.evil.example/watch?v=" + ID, ("not_allowed", "only fetch audio")),
    ("https://evilyoutube.com/watch?v=" + ID, ("not_allowed", "only fetch audio")),
    ("https://youtube.com@evil.example/watch?v=" + ID, ("not_allowed", "only fetch audio")),
    ("https://user:pass@www.youtube.com/watch?v=" + ID, ("not_allowed", "only fetch audio")),
    ("https://y\u043eutube.com/watch?v=" + ID, ("not_allowed", "only fetch audio")),          # Cyrillic о
    ("https://xn--ytube-7ve.com/watch?v=" + ID, ("not_allowed", "only fetch audio")),        # punycode look-alike
    ("https://www.youtube.com:8443/watch?v=" + ID, ("not_allowed", "only fetch audio")),
    ("https://soundcloud.com.evil.example/dj/set", ("not_allowed", "only fetch audio")),
    ("http://127.0.0.1:8766/set.mp3", ("not_allowed", "only fetch audio")),                  # wrong port
    ("http://localhost:8765/set.mp3", ("not_allowed", "only fetch audio")),
    ("http://127.1:8765/set.mp3", ("not_allowed", "only fetch audio")),
    ("http://10.0.0.1/x.mp3", ("not_allowed", "only fetch audio")),
    ("http://192.168.1.1/x.mp3", ("not_allowed", "only fetch audio")),
    ("http://169.254.169.254/latest/meta-data/", ("not_allowed", "only fetch audio")),
    ("http://[::1]:8765/x.mp3", ("not_allowed", "only fetch audio")),
    ("http://0x7f000001:8765/x.mp3", ("not_allowed", "only fetch audio")),
    ("http://2130706433:8765/x.mp3", ("not_allowed", "only fetch audio")),
    (f"http://{EXTRA}/a.mp3%0d%0aHost:%20evil", ("bad_source", "control characters")),
    ("file:///etc/passwd", ("bad_source", "could not find a YouTube or SoundCloud link")),
    ("javascript:alert(1)", ("bad_source", "could not find a YouTube or SoundCloud link")),
    ("ftp://youtube.com/watch?v=" + ID, ("youtube", W, None)),    # only the https:// link is ever fetched
    ("ftp://evil.example/x.mp3", ("not_allowed", "only fetch audio")),
    ("data:text/html,<a href=x>", ("bad_source", "could not find")),
    # --- refused: no link, bad times, too long ----------------------------------------------------------------
    ("who made this?", ("bad_source", "could not find a YouTube or SoundCloud link")),
    ("", ("bad_source", "could not find a YouTube or SoundCloud link")),
    ("a file.mp3 I like", ("bad_source", "could not find")),
    ("/identify 1:02:03", ("bad_source", "I see the time 1:02:03 but no link")),
    (f"{YT}?t=soon", ("bad_time", "I could not read the time \u201csoon\u201d")),
    (f"{SC}#t=1:75", ("bad_time", "I could not read the time \u201c1:75\u201d")),
    (f"{YT} at 1:99", ("bad_time", "I could not read the time \u201c1:99\u201d. Write it like 1:02:03")),
    (f"{YT}?t={'9' * 1000}", ("bad_time", "Write it like 1:02:03")),
    (f"{YT} at 1:00 or 2:00?", ("two_times", "You wrote two different times, 1:00 and 2:00")),
    (f"{YT}?t={'9' * 5000}", ("text_too_long", "a track link is much shorter")),
    ("x" * 9000, ("text_too_long", "9,000 characters long; I read at most 8,192")),
    (f"{YT} " + "blah " * 2000, ("text_too_long", "I read at most 8,192")),
]


def test_the_table_is_big_enough() -> None:
    texts = [t for t, _ in ROWS]
    assert len(ROWS) >= 150 and len(set(texts)) == len(texts)


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """The whole table through one `spy link --json` (the real CLI entry point, settings from the environment)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SPY_FETCH_EXTRA_HOSTS", EXTRA)
    mp.chdir(tmp_path_factory.mktemp("cwd"))          # no stray .env
    import io
    from contextlib import redirect_stdout

    out = io.StringIO()
    try:
        with redirect_stdout(out):
            rc = main(["link", "--json", *[t for t, _ in ROWS]])
    finally:
        mp.undo()
    lines = out.getvalue().splitlines()
    assert rc == 1, "some rows are refusals, so the exit code says so"
    assert len(lines) == len(ROWS)
    parsed = [json.loads(line) for line in lines]
    assert all(set(d) == {"text", "ok", "platform", "url", "start_s", "code", "message"} for d in parsed)
    return {d["text"]: d for d in parsed}


@pytest.mark.parametrize("text, expected", ROWS, ids=[f"{i:03d}" for i in range(len(ROWS))])
def test_link_table(text: str, expected: tuple, answers: dict[str, dict]) -> None:
    got = answers[text]
    if len(expected) == 3:
        platform, url, start = expected
        assert (got["ok"], got["platform"], got["url"], got["start_s"], got["code"]) == (
            True, platform, url, None if start is None else float(start), None), got
    else:
        code, phrase = expected
        assert not got["ok"] and got["code"] == code, got
        assert phrase in got["message"], got["message"]
        assert got["url"] is None and got["platform"] is None


def test_spy_link_reads_a_file_and_stdin_and_never_loads_tensorflow(tmp_path: Path) -> None:
    """`spy link --file -` on 1,000 messages of ordinary chat: well under a second per hundred, no TensorFlow."""
    lines = [f"lol that drop at the {i % 9}0s mark, see you at {i % 12}:30 tonight" if i % 4 else
             f"who is this at {i % 60}:{i % 60:02d}? https://youtu.be/{ID}" for i in range(1000)]
    code = ("import sys, time; from spy.cli import main; t = time.perf_counter(); rc = main(['link', '--json', "
            "'--file', '-']); sys.stderr.write(f'{time.perf_counter() - t:.3f} {\"tensorflow\" in sys.modules}\\n');"
            " sys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", code], input="\n".join(lines), capture_output=True, text=True,
                         cwd=tmp_path, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    seconds, tf = run.stderr.strip().splitlines()[-1].split()
    answers = [json.loads(line) for line in run.stdout.splitlines()]
    assert run.returncode == 1 and len(answers) == 1000
    assert sum(a["ok"] for a in answers) == 250 and all(a["start_s"] is not None for a in answers if a["ok"])
    assert {a["code"] for a in answers if not a["ok"]} == {"bad_source"}
    assert tf == "False"
    assert float(seconds) < 5.0, f"{seconds} s for 1,000 messages"     # measured ~0.1 s; 2-core box, shared


def test_spy_link_human_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["link", f"at 1:02:03 {YT}"]) == 0
    out = capsys.readouterr().out
    assert f"ok    youtube    {W}  from 1:02:03" in out
    assert main(["link", "https://soundcloud.com/dj/sets/x", "--reply", YT]) == 1   # its own link, refused
    assert "no    playlist" in capsys.readouterr().out
    assert main(["link", "/identify 62:03", "--reply", f"this {SC}"]) == 0
    assert "from 1:02:03" in capsys.readouterr().out
    assert main(["link", YT, "--at", "1:99"]) == 1
    assert "bad_time" in capsys.readouterr().out
    assert main(["link"]) == 1
    assert "Give one or more message texts" in capsys.readouterr().err
    started = time.perf_counter()
    assert main(["link", "--json", *[f"{YT} {i}" for i in range(100)]]) == 0
    assert time.perf_counter() - started < 2.0
