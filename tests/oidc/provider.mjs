// A real OpenID Connect provider for authql's OAuth tests (driven by tests/oidc_provider.py).
//
//   PORT=0 OIDC_CLIENTS='[...]' OIDC_ACCOUNTS='{...}' node provider.mjs [port]
//
// Listens on 127.0.0.1 only. The port comes from argv[2], else $PORT, else 0 (a free port
// picked by the OS: no race between choosing and binding). The issuer is
// http://127.0.0.1:<port>; once listening, one line `READY <issuer>` goes to stdout.
//
// OIDC_CLIENTS: JSON list of {client_id, client_secret, redirect_uris, ...}; any other
//   client metadata passes through. Defaults: client_secret_basic, response_types [code],
//   grant_types [authorization_code].
// OIDC_ACCOUNTS: JSON object {id: {email, email_verified, name}}; findAccount(ctx, id)
//   answers sub=id with those claims, and an unknown id gets email <id>@example.com,
//   email_verified false.
// OIDC_PROVIDER_VERBOSE=1 keeps oidc-provider's development notices (otherwise dropped).
//
// PKCE is required for every client (oidc-provider 9 knows S256 only); scopes are openid,
// email, profile; the id_token (RS256, the development keys) carries the scope's claims
// (conformIdTokenClaims: false), so relying parties see email in the id_token itself.
// devInteractions serve the login form (login = account id, any password) and the consent
// form. The process exits when stdin closes (its parent died) or on SIGTERM/SIGINT.

const verbose = process.env.OIDC_PROVIDER_VERBOSE === '1';
if (!verbose) {
  // Drop the development-only notices ("Unsupported runtime. Use Node.js v22.x LTS", dev
  // keys, in-memory adapter, devInteractions): they are expected here and only noise.
  for (const name of ['info', 'warn']) {
    const original = console[name].bind(console);
    console[name] = (...args) => {
      if (typeof args[0] === 'string' && /^oidc-provider (NOTICE|WARNING): /.test(args[0])) {
        return;
      }
      original(...args);
    };
  }
}

// Imported after the console filter: the runtime check runs when the module is evaluated.
const { default: Provider } = await import('oidc-provider');
const http = await import('node:http');

function parseJson(name, fallback) {
  const raw = process.env[name];
  if (!raw) {
    return fallback;
  }
  try {
    return JSON.parse(raw);
  } catch (error) {
    console.error(`${name} is not valid JSON: ${error.message}`);
    process.exit(2);
  }
}

const clients = parseJson('OIDC_CLIENTS', []).map((client) => ({
  token_endpoint_auth_method: 'client_secret_basic',
  response_types: ['code'],
  grant_types: ['authorization_code'],
  ...client,
}));
const accounts = parseJson('OIDC_ACCOUNTS', {});

function claimsFor(id) {
  const known = Object.hasOwn(accounts, id) ? accounts[id] : null;
  const claims = known ?? { email: `${id}@example.com`, email_verified: false };
  return { ...claims, sub: id };
}

const port = Number(process.argv[2] ?? process.env.PORT ?? 0);
const server = http.createServer();

server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients,
    findAccount(ctx, id) {
      return { accountId: id, claims: () => claimsFor(id) };
    },
    scopes: ['openid', 'email', 'profile'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
    },
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true } },
    cookies: { keys: ['authql-test-oidc-cookie-key'] },
    ttl: {
      AccessToken: 3600,
      AuthorizationCode: 60,
      ClientCredentials: 600,
      DeviceCode: 600,
      IdToken: 3600,
      RefreshToken: 86400,
      Grant: 86400,
      Interaction: 3600,
      Session: 86400,
    },
  });
  provider.on('server_error', (ctx, error) => {
    console.error(`server_error ${ctx.method} ${ctx.path}:`, error);
  });
  for (const event of ['authorization.error', 'grant.error', 'userinfo.error']) {
    provider.on(event, (ctx, error) => {
      console.error(`${event}: ${error.error ?? error.name}: ${error.error_description ?? error.message}`);
    });
  }
  server.on('request', provider.callback());
  // Static clients are validated on first use; load them now so bad metadata fails start-up.
  Promise.all(clients.map((client) => provider.Client.find(String(client.client_id)))).then(
    () => process.stdout.write(`READY ${issuer}\n`),
    (error) => {
      console.error(`invalid client in OIDC_CLIENTS: ${error.error_description ?? error.message}`);
      process.exit(2);
    },
  );
});

server.on('error', (error) => {
  console.error(`cannot listen on 127.0.0.1:${port}: ${error.message}`);
  process.exit(1);
});

function stop() {
  server.closeAllConnections?.();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 500).unref();
}

process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.on('error', stop);
process.stdin.resume();
