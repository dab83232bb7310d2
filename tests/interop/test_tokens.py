"""LiveKit's official Python verifier accepts convene's tokens and reads identity, room and grants."""

from livekit import api

from convene_server import API_KEY, API_SECRET


def enter_and_join(server, meeting, credential, identity):
    mid = meeting["meeting_id"]
    entered = server.post(f"/v1/meetings/{mid}/enter", json={"credential": credential, "name": identity.title(), "identity": identity})
    assert entered.status_code == 200, entered.text
    joined = server.post(f"/v1/meetings/{mid}/join", headers={"Authorization": "Bearer " + entered.json()["token"]})
    assert joined.status_code == 200, joined.text
    return entered.json(), joined.json()


def test_access_tokens_verify_with_the_official_verifier(convene):
    created = convene.admin("POST", "/v1/meetings", json={"name": "Interop", "mode": "stream", "policy": "open"})
    assert created.status_code == 201, created.text
    meeting = created.json()
    verifier = api.TokenVerifier(API_KEY, API_SECRET)

    _, host = enter_and_join(convene, meeting, meeting["credentials"]["host"], "host-1")
    claims = verifier.verify(host["access_token"])
    assert claims.identity == "host-1"
    assert claims.name == "Host-1"
    assert claims.video.room == meeting["room_name"]
    assert claims.video.room_join and claims.video.room_admin
    assert claims.video.can_publish and claims.video.can_subscribe and claims.video.can_publish_data

    _, speaker = enter_and_join(convene, meeting, meeting["credentials"]["participant"], "speaker-1")
    claims = verifier.verify(speaker["access_token"])
    assert claims.identity == "speaker-1"
    assert claims.video.can_publish and not claims.video.room_admin

    entered, viewer = enter_and_join(convene, meeting, meeting["credentials"]["viewer"], "viewer-1")
    claims = verifier.verify(viewer["access_token"])
    assert claims.identity == "viewer-1"
    assert claims.video.room == meeting["room_name"]
    assert claims.video.room_join and claims.video.can_subscribe
    assert claims.video.can_publish is False and claims.video.can_publish_data is False

    # The waiting-room token verifies too, but grants no room join.
    waiting = verifier.verify(entered["token"])
    assert waiting.identity == "viewer-1"
    assert not waiting.video.room_join


def test_the_verifier_rejects_tokens_signed_with_another_secret(convene):
    meeting = convene.admin("POST", "/v1/meetings", json={"name": "Interop", "policy": "open"}).json()
    _, host = enter_and_join(convene, meeting, meeting["credentials"]["host"], "h")
    wrong = api.TokenVerifier(API_KEY, "some-other-secret-some-other-secret-0000")
    try:
        wrong.verify(host["access_token"])
    except Exception:
        pass
    else:
        raise AssertionError("a token verified with the wrong secret")
