"""The server binary's basics: it comes up, answers /healthz, and stops cleanly on signals."""
import signal
import time


def test_healthz_and_sigterm(sfu):
    status, body = sfu.get("/healthz")
    assert status == 200
    assert body == {"status": "ok"}

    started = time.monotonic()
    code = sfu.terminate(signal.SIGTERM, timeout=5.0)
    elapsed = time.monotonic() - started
    assert code == 0, f"exit code {code} after SIGTERM\n{sfu.log()}"
    assert elapsed < 5.0


def test_sigint_exits_zero(sfu):
    code = sfu.terminate(signal.SIGINT, timeout=5.0)
    assert code == 0, f"exit code {code} after SIGINT\n{sfu.log()}"


def test_unknown_route_is_404(sfu):
    status, _ = sfu.get("/no-such-route")
    assert status == 404


def test_bad_port_config_fails_with_message(sfu_factory):
    p = sfu_factory(env={"SFU_HTTP_PORT": "not-a-port"}, wait=False)
    code = p.proc.wait(timeout=10)
    assert code != 0
    assert "SFU_HTTP_PORT" in p.log()


def test_sqlite_store_is_created_in_the_data_dir(sfu):
    assert (sfu.data_dir / "sfu.sqlite").exists()


def test_unreachable_database_stops_the_server_with_a_message(sfu_factory):
    p = sfu_factory(env={"SFU_DATABASE_URL": "postgres://nobody@127.0.0.1:1/none"}, wait=False)
    code = p.proc.wait(timeout=15)
    assert code != 0
    assert "PostgreSQL" in p.log()
