"""The ad-platform audience connectors (Tencent Ads, Ocean Engine, Baidu, Meta, Google Customer
Match) on both engines, each against a local peer that checks its platform's contract: auth,
request shape, id types and hashing. An audience is delivered, changed and delivered again; the
platform must then hold exactly the new audience, hashed as the platform computes it, with rate
limits on the way retried and refusals recorded."""

from __future__ import annotations

import hashlib
import textwrap

import pytest

from connectors.ads.meta import MetaAdsConnector
from connectors.ads.oceanengine import dmp_data, dmp_file
from connectors.ads.tencent import TencentAdsConnector
from connectors.identifiers import IdError
from openaudience.core.errors import UserError
from openaudience.delivery import store
from openaudience.delivery.engine import deliver, runs
from openaudience.delivery.source import DestinationErrors, load_destinations
from openaudience.segments.source import load_project
from tests.support.ad_platforms import (
    BaiduAds,
    GoogleAds,
    MetaAds,
    OceanEngine,
    TencentAds,
    dmp_message_class,
)
from tests.test_delivery import ENGINES, _folders, _reset_delivery, _synthetic_version

AUDIENCE = """name: {name}
id_type: {id_type}
where:
  tag: {{name: city, is_not_null: true}}
"""


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- hashing as the platforms document it ----------------------------------------------------------
def test_tencent_hashing_follows_the_platforms_worked_examples():
    # the file guide's examples: HASH_IMEI is the md5 of the lower-case IMEI
    assert TencentAdsConnector.prepare_id("imei", "A000002C9060F7", "md5").startswith("f2d5a650")
    assert TencentAdsConnector.prepare_id("imei", "A000002C9060F7", "md5").endswith("14e5")
    # phones: the bare 11 digits, whatever the input looked like
    assert TencentAdsConnector.prepare_id("mobile", "+86 138-0013-8000", "md5") == md5("13800138000")
    assert TencentAdsConnector.prepare_id("mobile", "13800138000", "sha256") == sha256("13800138000")
    # the OAID as it is; the IDFA upper-case with its hyphens
    assert TencentAdsConnector.prepare_id("oaid", "AbC-1", "md5") == md5("AbC-1")
    assert TencentAdsConnector.prepare_id("idfa", "ff1999cd-7177-4a5b-8c1d-74937a102630", "md5") == \
        md5("FF1999CD-7177-4A5B-8C1D-74937A102630")


def test_meta_hashing_follows_metas_examples():
    assert MetaAdsConnector.prepare_id("email", "  Mary@Example.com ", "sha256").startswith("f1904cf1")
    assert MetaAdsConnector.prepare_id("email", "mary@example.com", "sha256").endswith("bb79")
    phone = MetaAdsConnector.prepare_id("mobile", "+1 (555) 987-6543", "sha256", region="US")
    assert phone.startswith("1ef97083") and phone.endswith("6a4e")
    # a mainland number without its country code is read in the destination's region
    assert MetaAdsConnector.prepare_id("mobile", "138 0013 8000", "sha256", region="CN") == \
        sha256("8613800138000")
    assert MetaAdsConnector.prepare_id("idfa", "FF1999CD-7177-4A5B-8C1D-74937A102630", "raw") == \
        "ff1999cd-7177-4a5b-8c1d-74937a102630"
    with pytest.raises(IdError, match="phone"):
        MetaAdsConnector.prepare_id("mobile", "12", "sha256")


def test_ocean_engine_files_read_back_with_the_protobuf_runtime():
    DmpData = dmp_message_class()
    ids = [sha256(str(i)) for i in range(25_001)]
    message = DmpData.FromString(dmp_data(6, ids[:3]))
    assert [(i.dataType, i.id) for i in message.idList] == [(6, x) for x in ids[:3]]
    import base64
    import io
    import zipfile

    with zipfile.ZipFile(io.BytesIO(dmp_file(6, ids, "x.txt"))) as z:
        lines = z.read("x.txt").decode().splitlines()
    sizes = [len(DmpData.FromString(base64.b64decode(line)).idList) for line in lines]
    assert sizes == [10_000, 10_000, 5_001]


# -- destination files -------------------------------------------------------------------------------
def _project(tmp_path, name: str, id_type: str, destination: str):
    return _folders(tmp_path, {name: textwrap.dedent(destination)},
                    {"people": AUDIENCE.format(name="people", id_type=id_type)})


@pytest.mark.parametrize("destination, expected", [
    ("""
       name: m
       audience: people
       channel: meta_ads
       meta_ads: {audience_id: "1", access_token_env: T}
       """, "meta_ads takes mobile as sha256, not raw"),
    ("""
       name: m
       audience: people
       channel: baidu_ads
       id_form: md5
       baidu_ads: {user_name: u, access_token_env: T, crowd_name: x}
       """, "mode: Baidu takes whole crowds"),
    ("""
       name: m
       audience: people
       channel: baidu_ads
       id_form: md5
       mode: full
       baidu_ads: {user_name: u, access_token_env: T, crowd_name: "x {day}"}
       """, "crowd_name may use {version} and {date}, not {day}"),
    ("""
       name: m
       audience: people
       channel: google_ads
       id_form: sha256
       google_ads: {customer_id: "123-456-7890", user_list_id: "1", developer_token_env: D,
                    client_id_env: C, client_secret_env: S, refresh_token_env: R}
       """, "google_ads.customer_id"),
    ("""
       name: m
       audience: people
       channel: tencent_ads
       id_form: md5
       tencent_ads: {account_id: 1, audience_id: 2, access_token: secret-in-the-file}
       """, "tencent_ads.access_token"),
])
def test_ad_destination_errors_name_the_field(tmp_path, destination, expected):
    a, d = _project(tmp_path, "m", "mobile", destination)
    with pytest.raises(DestinationErrors) as info:
        load_destinations(d, load_project(a))
    assert expected in str(info.value) and "m.yml:" in str(info.value)


# -- end to end --------------------------------------------------------------------------------------
def _phones(n: int, start: int = 0) -> list[str]:
    # the warehouse holds them as loaded: some with +86 and separators
    return [(f"+86 138-{i:04d}-{i % 10000:04d}" if i % 3 == 0 else f"138{i:04d}{i % 10000:04d}")
            for i in range(start, start + n)]


def _digits(phone: str) -> str:
    d = "".join(c for c in phone if c.isdigit())
    return d[2:] if len(d) == 13 else d


PLATFORMS = {
    # channel: (id_type, id_form, block, peer factory, ids, hash as the platform computes it)
    "tencent_ads": ("mobile", "md5",
                    "tencent_ads: {{account_id: 1001, audience_id: 2002, access_token_env: OA_T_TOKEN, "
                    "base_url: '{url}'}}",
                    lambda: TencentAds(1001, 2002, "tok-t"), _phones,
                    lambda p: md5(_digits(p))),
    "ocean_engine": ("mobile", "sha256",
                     "ocean_engine: {{advertiser_id: 77, data_source_id: '880', custom_audience_id: 99, "
                     "access_token_env: OA_T_TOKEN, base_url: '{url}'}}",
                     lambda: OceanEngine(77, "880", 99, "tok-t"), _phones,
                     lambda p: sha256(_digits(p))),
    "meta_ads": ("email", "sha256",
                 "meta_ads: {{audience_id: '23850', access_token_env: OA_T_TOKEN, "
                 "app_secret_env: OA_T_APP_SECRET, base_url: '{url}'}}",
                 lambda: MetaAds("23850", "tok-t", "app-secret"),
                 lambda n, start=0: [f" Person.{i}@Example.COM " for i in range(start, start + n)],
                 lambda e: sha256(e.strip().lower())),
    "google_ads": ("mobile", "sha256",
                   "google_ads: {{customer_id: '1234567890', user_list_id: '555', login_customer_id: "
                   "'9876543210', developer_token_env: OA_T_DEV, client_id_env: OA_T_CLIENT, "
                   "client_secret_env: OA_T_CLIENT_SECRET, refresh_token_env: OA_T_REFRESH, "
                   "token_url: '{url}/token', base_url: '{url}'}}",
                   lambda: GoogleAds("1234567890", "555", "dev-t", "client", "client-secret", "refresh",
                                     "9876543210"), _phones,
                   lambda p: sha256("+86" + _digits(p))),
}


@pytest.fixture
def ad_env(monkeypatch):
    for name, value in {"OA_T_TOKEN": "tok-t", "OA_T_APP_SECRET": "app-secret", "OA_T_DEV": "dev-t",
                        "OA_T_CLIENT": "client", "OA_T_CLIENT_SECRET": "client-secret",
                        "OA_T_REFRESH": "refresh"}.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("channel", list(PLATFORMS))
def test_an_audience_reaches_the_platform_and_follows_its_changes(
        built_engines, tmp_path, ad_env, channel, engine):
    id_type, id_form, block, factory, make_ids, platform_hash = PLATFORMS[channel]
    wh = built_engines[engine].warehouse
    _reset_delivery(wh)
    peer = factory()
    try:
        a, d = _project(tmp_path, "sync", id_type,
                        f"name: sync\naudience: people\nchannel: {channel}\nid_form: {id_form}\n"
                        f"batch_size: 1000\nconcurrency: 2\n"
                        f"retries: {{max_attempts: 4, initial_backoff_s: 0.05, max_backoff_s: 0.2}}\n"
                        + block.format(url=peer.url) + "\n")
        dests = load_destinations(d, load_project(a))
        ids = make_ids(2500)
        _synthetic_version(wh, "people", id_type, ids)
        peer.throttle(2)  # the first two uploads meet the platform's rate limit
        if channel == "google_ads":
            peer.expire_at_job = 2  # and the access token expires mid-run
            peer.refuse = {platform_hash(ids[200])}  # Google refuses one identifier
        [run] = deliver(dests, "sync", wh=wh)
        assert peer.violations == []
        expected = {platform_hash(i) for i in ids}
        refused = set(peer.refuse)
        assert peer.members == expected - refused
        assert peer.throttled == 0
        retried = wh.query(f"select count(*) from {store.LOG} where run_id = %s and attempts > 1",
                           [run.run_id])[0][0]
        assert retried >= 1000  # the throttled uploads' members were sent again
        if channel == "google_ads":
            assert run.status == "partial" and run.counts["failed"] == 1 and peer.refreshes == 2
            [error] = wh.query(f"select error from {store.LOG} where run_id = %s and status = 'failed'",
                               [run.run_id])[0]
            assert "malformed" in error
        else:
            assert run.status == "succeeded" and run.counts["sent"] == 2500
        if channel == "ocean_engine":
            assert peer.published == 1
            peer.publish_limit = 1  # the day's publish is used: the next run says so, and succeeds
        # 100 leave and 50 join: the platform follows with one remove and one add upload
        uploads = len(peer.uploads)
        kept = ids[100:] + make_ids(50, start=5000)
        _synthetic_version(wh, "people", id_type, kept)
        [diff] = deliver(dests, "sync", wh=wh)
        assert diff.counts["sent"] == 150
        # the refused member was never added, so the next version tries it again
        assert diff.counts["failed"] == (1 if channel == "google_ads" else 0)
        assert peer.violations == []
        assert peer.members == {platform_hash(i) for i in kept} - refused
        assert sorted(u["op"] for u in peer.uploads[uploads:]) == ["add", "remove"]
        assert {u["n"] for u in peer.uploads[uploads:] if u["op"] == "remove"} == {100}
        if channel == "ocean_engine":
            assert diff.status == "succeeded" and "did not publish audience 99 (code 40003" in diff.error
        if channel == "meta_ads":
            assert len(peer.sessions) == len(peer.uploads)  # a session per upload, none reused
    finally:
        peer.stop()


@pytest.mark.parametrize("engine", ENGINES)
def test_baidu_pushes_each_version_as_a_new_crowd(built_engines, tmp_path, ad_env, engine):
    wh = built_engines[engine].warehouse
    _reset_delivery(wh)
    peer = BaiduAds("brand-user", "tok-t")
    try:
        a, d = _project(tmp_path, "crowd", "imei",
                        f"""
                        name: crowd
                        audience: people
                        channel: baidu_ads
                        id_form: md5
                        mode: full
                        retries: {{max_attempts: 3, initial_backoff_s: 0.05, max_backoff_s: 0.1}}
                        baidu_ads: {{user_name: brand-user, access_token_env: OA_T_TOKEN,
                                     crowd_name: "summer v{{version}}", base_url: '{peer.url}'}}
                        """)
        dests = load_destinations(d, load_project(a))
        imeis = [f"86{i:013d}" for i in range(6000)]
        v1 = _synthetic_version(wh, "people", "imei", imeis)
        peer.throttle(1)  # a system-busy reply first
        [run] = deliver(dests, "crowd", wh=wh)
        assert peer.violations == [] and run.status == "succeeded" and run.counts["sent"] == 6000
        assert set(peer.crowds[f"summer v{v1}"]) == {md5(i) for i in imeis}
        v2 = _synthetic_version(wh, "people", "imei", imeis[500:] + [f"35{i:013d}" for i in range(10)])
        [again] = deliver(dests, "crowd", wh=wh)
        assert again.counts["sent"] == 5510
        assert set(peer.crowds[f"summer v{v2}"]) == {md5(i) for i in imeis[500:]} | \
            {md5(f"35{i:013d}") for i in range(10)}
        # below Baidu's 5,000 ids a crowd, or above one upload: refused before anything is sent
        uploads = len(peer.uploads)
        _synthetic_version(wh, "people", "imei", imeis[:100])
        with pytest.raises(UserError, match="baidu_ads needs at least 5,000 members; this delivery "
                                            "has 100; nothing was sent"):
            deliver(dests, "crowd", wh=wh)
        small = load_destinations(d, load_project(a)).destinations["crowd"].model_copy(
            update={"batch_size": 5000})
        dests.destinations["crowd"] = small
        _synthetic_version(wh, "people", "imei", imeis)
        with pytest.raises(UserError, match="baidu_ads takes an audience in one upload, and 6,000 "
                                            "members is more than batch_size 5,000"):
            deliver(dests, "crowd", wh=wh)
        assert len(peer.uploads) == uploads
    finally:
        peer.stop()


def test_refused_credentials_stop_the_run_and_a_rerun_resumes(built_engines, tmp_path, ad_env):
    wh = built_engines["duckdb"].warehouse
    _reset_delivery(wh)
    peer = MetaAds("23850", "the-right-token")
    try:
        a, d = _project(tmp_path, "fb", "email",
                        f"name: fb\naudience: people\nchannel: meta_ads\nid_form: sha256\nbatch_size: 500\n"
                        f"meta_ads: {{audience_id: '23850', access_token_env: OA_T_TOKEN, "
                        f"base_url: '{peer.url}'}}\n")
        dests = load_destinations(d, load_project(a))
        emails = [f"p{i}@example.org" for i in range(1200)]
        _synthetic_version(wh, "people", "email", emails)
        with pytest.raises(UserError, match=r"Meta refused the access token or its permissions \(code 190"):
            deliver(dests, "fb", wh=wh)
        [r] = runs(wh, "fb")
        assert r["status"] == "stopped" and r["pending"] == 1200 and peer.members == set()
        ad_env.setenv("OA_T_TOKEN", "the-right-token")
        [resumed] = deliver(dests, "fb", wh=wh)
        assert resumed.resumed and resumed.status == "succeeded" and resumed.counts["sent"] == 1200
        assert peer.members == {sha256(e) for e in emails} and peer.violations == []
    finally:
        peer.stop()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_token_refused_with_http_200_stops_the_run_after_the_breaker(
        built_engines, tmp_path, ad_env, engine):
    """Tencent answers a wrong token with HTTP 200 and an error code, as it does any refusal:
    the breaker stops the run after `breaker_failures` batches refused whole, instead of
    dead-lettering the audience; with the token fixed, a rerun sends the rest and replay the
    refused batches."""
    from openaudience.delivery.engine import replay

    wh = built_engines[engine].warehouse
    _reset_delivery(wh)
    peer = TencentAds(1001, 2002, "the-right-token")
    try:
        a, d = _project(tmp_path, "tx", "mobile",
                        f"name: tx\naudience: people\nchannel: tencent_ads\nid_form: md5\n"
                        f"batch_size: 500\nconcurrency: 1\nbreaker_failures: 2\n"
                        f"tencent_ads: {{account_id: 1001, audience_id: 2002, access_token_env: OA_T_TOKEN, "
                        f"base_url: '{peer.url}'}}\n")
        dests = load_destinations(d, load_project(a))
        phones = _phones(3000)
        _synthetic_version(wh, "people", "mobile", phones)
        [run] = deliver(dests, "tx", wh=wh)
        assert run.status == "stopped" and "every member refused with 11002" in run.error
        # two batches refused, and at most the one already in flight when the breaker opened
        failed, pending = run.counts["failed"], run.counts["pending"]
        assert failed in (1000, 1500) and failed + pending == 3000
        ad_env.setenv("OA_T_TOKEN", "the-right-token")
        [resumed] = deliver(dests, "tx", wh=wh)
        assert resumed.status == "partial" and resumed.counts["sent"] == pending
        again = replay(dests, "tx", wh=wh)
        assert again is not None and again.status == "succeeded" and again.counts["sent"] == failed
        assert peer.members == {md5(_digits(p)) for p in phones} and peer.violations == []
    finally:
        peer.stop()
