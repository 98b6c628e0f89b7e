"""Agent Auth through the official `langchain-auth` SDK, unchanged, against hostplane.

Environment: LANGSMITH_API_URL (hostplane), LANGSMITH_API_KEY (a workspace key),
OAUTH_URL (the Authlib server of oauth_servers.py), MCP_URL (its MCP server).
Users sign in over HTTP as a browser would: the provider's authorization URL, its
redirect to hostplane's callback, the page there. Every check is an assert; the last
line printed is a JSON summary the Rust test goes on with.
"""

import asyncio
import json
import os
import time
from urllib.parse import parse_qs, urlparse

import httpx
from langchain_auth import Client

HP = os.environ["LANGSMITH_API_URL"]
KEY = os.environ["LANGSMITH_API_KEY"]
OAUTH = os.environ["OAUTH_URL"]
MCP = os.environ["MCP_URL"]
HEADERS = {"x-api-key": KEY}


def control(**state):
    httpx.post(f"{OAUTH}/control", json=state).raise_for_status()


def stats():
    return httpx.get(f"{OAUTH}/stats").json()


def sign_in(url, **extra):
    """The user's browser: the provider's page (which consents at once), then the
    redirect to hostplane's callback. Returns (callback URL, its status, its page)."""
    query = "".join(f"&{k}={v}" for k, v in extra.items())
    at_provider = httpx.get(url + query)
    assert at_provider.status_code == 302, (at_provider.status_code, at_provider.text)
    back = at_provider.headers["location"]
    assert back.startswith(f"{HP}/auth/callback/"), back
    page = httpx.get(back)
    return back, page.status_code, page.text


def tokens():
    r = httpx.get(f"{HP}/v2/auth/tokens", headers=HEADERS)
    assert r.status_code == 200, r.text
    return r.json()


async def main():
    client = Client()  # LANGSMITH_API_URL and LANGSMITH_API_KEY from the environment
    summary = {}

    # Providers: create, list, get, update.
    acme = await client.create_oauth_provider(
        provider_id="acme",
        name="Acme",
        client_id="hp-post",
        client_secret="hp-secret",
        auth_url=f"{OAUTH}/authorize",
        token_url=f"{OAUTH}/token",
        uses_pkce=True,
    )
    assert acme.provider_id == "acme" and acme.uses_pkce and acme.code_challenge_method == "S256"
    listed = await client.list_oauth_providers()
    assert [p.provider_id for p in listed] == ["acme"], listed
    got = await client.get_oauth_provider("acme")
    assert got.id == acme.id
    renamed = await client.update_oauth_provider("acme", name="Acme Corp")
    assert renamed.name == "Acme Corp" and renamed.client_id == "hp-post"

    # No token yet: a sign-in URL with state and a PKCE challenge.
    first = await client.authenticate(provider="acme", scopes=["read"], user_id="alice")
    assert first.status == "pending" and first.auth_id, first
    q = parse_qs(urlparse(first.url).query)
    assert q["state"][0] and q["code_challenge"][0] and q["code_challenge_method"] == ["S256"], q
    assert q["redirect_uri"] == [f"{HP}/auth/callback/acme"] and q["scope"] == ["read"], q
    assert not (await client.check_token_exists("acme")).has_token

    # wait_for_completion is already waiting when the user comes back.
    waiting = asyncio.create_task(client.wait_for_completion(first.auth_id, timeout=60))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    back, status, page = await asyncio.to_thread(sign_in, first.url, user="alice")
    called_back = time.monotonic()
    assert status == 200 and "You are signed in to Acme Corp" in page, (status, page)
    done = await waiting
    summary["wake_ms"] = round((time.monotonic() - called_back) * 1000)
    assert done.status == "completed" and done.token.startswith("at-"), done
    # The wait was woken by the callback, not by its periodic re-check (every 5 s).
    assert summary["wake_ms"] < 2500, summary

    # The stored token comes back directly.
    again = await client.authenticate(provider="acme", scopes=["read"], user_id="alice")
    assert again.status == "completed" and again.token == done.token, again
    assert (await client.check_token_exists("acme")).has_token
    assert stats()["token_requests"] == 1

    # A replayed callback changes nothing.
    replay = httpx.get(back)
    assert replay.status_code == 400 and "not valid" in replay.text, replay.text
    # So does an unknown state.
    bogus = httpx.get(f"{HP}/auth/callback/acme?code=x&state=made-up")
    assert bogus.status_code == 400, bogus.text
    assert len(tokens()) == 1 and stats()["token_requests"] == 1

    # An expired token is refreshed with its refresh token.
    control(expires_in=1)
    bob = await client.authenticate(provider="acme", scopes=["read"], user_id="bob")
    await asyncio.to_thread(sign_in, bob.url, user="bob")
    bob_first = await client.wait_for_completion(bob.auth_id, timeout=10)
    control(expires_in=3600)
    refreshed = await client.authenticate(provider="acme", scopes=["read"], user_id="bob")
    assert refreshed.status == "completed" and refreshed.token != bob_first.token, refreshed
    assert stats()["refreshes"] == 1, stats()
    same = await client.authenticate(provider="acme", scopes=["read"], user_id="bob")
    assert same.token == refreshed.token and stats()["refreshes"] == 1

    # Several agents at once with the same expired token: one refresh (the provider
    # rotates refresh tokens), and every one of them gets the new token.
    control(expires_in=1)
    hank = await client.authenticate(provider="acme", scopes=["read"], user_id="hank")
    await asyncio.to_thread(sign_in, hank.url, user="hank")
    await client.wait_for_completion(hank.auth_id, timeout=10)
    control(expires_in=3600)
    together = await asyncio.gather(
        *[client.authenticate(provider="acme", scopes=["read"], user_id="hank") for _ in range(4)]
    )
    assert all(r.status == "completed" for r in together), together
    assert len({r.token for r in together}) == 1, together
    assert stats()["refreshes"] == 2, stats()

    # The provider refuses: the waiter hears it, nothing is stored.
    denied = await client.authenticate(provider="acme", scopes=["read"], user_id="dave")
    _, status, page = await asyncio.to_thread(sign_in, denied.url, user="dave", deny=1)
    assert status == 400 and "access_denied" in page, page
    try:
        await client.wait_for_completion(denied.auth_id, timeout=5)
        raise AssertionError("a refused sign-in completed")
    except Exception as e:
        assert "HTTP 400" in str(e) and "access_denied" in str(e), e
    assert len(tokens()) == 3

    # The token endpoint is too slow (the server allows it 1 s): a clear failure.
    control(token_mode="slow")
    slow = await client.authenticate(provider="acme", scopes=["read"], user_id="erin")
    _, status, page = await asyncio.to_thread(sign_in, slow.url, user="erin")
    control(token_mode="ok")
    assert status == 502 and "did not answer within 1 s" in page, (status, page)
    assert len(tokens()) == 3

    # A token endpoint nobody answers at.
    await client.create_oauth_provider(
        provider_id="down",
        name="Down",
        client_id="hp-public",
        client_secret="",
        auth_url=f"{OAUTH}/authorize",
        token_url="http://127.0.0.1:9/token",
        uses_pkce=True,
    )
    down = await client.authenticate(provider="down", scopes=["read"], user_id="frank")
    _, status, page = await asyncio.to_thread(sign_in, down.url, user="frank")
    assert status == 502 and "cannot be reached" in page, (status, page)
    try:
        await client.wait_for_completion(down.auth_id, timeout=5)
        raise AssertionError("a failed exchange completed")
    except Exception as e:
        assert "HTTP 400" in str(e) and "cannot be reached" in str(e), e

    # A public client (token_endpoint_auth_method "none": PKCE, no secret).
    r = httpx.post(
        f"{HP}/v2/auth/providers",
        headers=HEADERS,
        json={"provider_id": "public", "name": "Public", "client_id": "hp-public",
              "auth_url": f"{OAUTH}/authorize", "token_url": f"{OAUTH}/token",
              "uses_pkce": True, "token_endpoint_auth_method": "none"},
    )
    assert r.status_code == 200 and r.json()["token_endpoint_auth_method"] == "none", r.text
    public = await client.authenticate(provider="public", scopes=["read"], user_id="gina")
    await asyncio.to_thread(sign_in, public.url, user="gina")
    assert (await client.wait_for_completion(public.auth_id, timeout=10)).token.startswith("at-")

    # Slack: the workspace-wide pair of routes.
    r = httpx.post(
        f"{HP}/v2/auth/providers",
        headers=HEADERS,
        json={"provider_id": "slack", "name": "Slack", "client_id": "hp-basic",
              "client_secret": "hp-secret", "auth_url": f"{OAUTH}/authorize",
              "token_url": f"{OAUTH}/token", "uses_pkce": True, "provider_type": "slack",
              "token_endpoint_auth_method": "client_secret_basic"},
    )
    assert r.status_code == 200, r.text
    exists = lambda: httpx.get(f"{HP}/v2/auth/tokens/workspace/slack/exists", headers=HEADERS).json()
    assert exists() == {"has_token": False}
    slack = await client.authenticate(provider="slack", scopes=["chat:write"], user_id="alice")
    await asyncio.to_thread(sign_in, slack.url, user="alice")
    await client.wait_for_completion(slack.auth_id, timeout=10)
    assert exists() == {"has_token": True}
    r = httpx.delete(f"{HP}/v2/auth/tokens/workspace/slack", headers=HEADERS)
    assert r.json() == {"message": "Revoked 1 Slack token(s)"}, r.text
    assert exists() == {"has_token": False}

    # force_new starts a sign-in although a token is stored.
    r = httpx.post(
        f"{HP}/v2/auth/authenticate",
        headers=HEADERS,
        json={"provider": "acme", "scopes": ["read"], "user_id": "alice", "force_new": True},
    )
    assert r.json()["status"] == "pending" and r.json()["url"], r.text

    # Nobody signs in: the wait times out.
    idle = await client.authenticate(provider="acme", scopes=["write"], user_id="alice")
    assert idle.status == "pending"
    try:
        await client.wait_for_completion(idle.auth_id, timeout=1)
        raise AssertionError("an idle sign-in completed")
    except TimeoutError:
        pass
    summary["pending_url"] = idle.url
    summary["pending_auth_id"] = idle.auth_id

    # An MCP server's provider, by discovery and dynamic registration.
    r = httpx.post(
        f"{HP}/v2/auth/providers/mcp-discover",
        headers=HEADERS,
        json={"provider_id": "docs", "name": "Docs", "mcp_server_url": f"{MCP}/mcp"},
    )
    assert r.status_code == 200, r.text
    docs = r.json()
    assert docs["is_dynamic_client"] and docs["uses_pkce"] and docs["mcp_server_url"] == f"{MCP}/mcp"
    assert docs["auth_url"] == f"{MCP}/authorize" and docs["token_url"] == f"{MCP}/token", docs
    mcp = await client.authenticate(provider="docs", scopes=[], user_id="alice")
    assert "resource=" in mcp.url, mcp.url
    await asyncio.to_thread(sign_in, mcp.url)
    mcp_done = await client.wait_for_completion(mcp.auth_id, timeout=10)
    assert mcp_done.token.startswith("mcp-at-"), mcp_done

    # Revoking removes the provider's tokens.
    revoked = await client.revoke_tokens("acme")
    assert revoked.provider_id == "acme" and revoked.message == "Revoked 3 token(s)", revoked
    assert not (await client.check_token_exists("acme")).has_token
    after = await client.authenticate(provider="acme", scopes=["read"], user_id="alice")
    assert after.status == "pending"

    deleted = await client.delete_oauth_provider("down")
    assert deleted.message == "OAuth provider 'down' deleted"
    summary["tokens"] = tokens()
    print(json.dumps(summary))


asyncio.run(main())
