// A real OpenID provider for the end-to-end tests: oidc-provider.
//
// - Client `svc` gets JWT access tokens (RFC 9068) through the client-credentials grant.
// - Client `web` is a browser login client (authorization code with PKCE), with RP-initiated and
//   back-channel logout. Its login interaction has no form: it signs `alice` in at once, with
//   the `acr` that ACR_MODE picks:
//     honour  the last value of the request's `acr_values` (default `urn:pwd`)
//     low     always `urn:pwd`, whatever was asked (a provider that ignores the request)
//
// Its signing key is generated at start with the key id from KID, so restarting with another
// KID is a key rotation.
//   PORT  port on 127.0.0.1      KID  key id (default key-1)      ALG  ES256 (default), RS256, EdDSA
//   TTL   access token lifetime in seconds (default 300)
//   REDIRECT_URI, POST_LOGOUT_URI, BACKCHANNEL_URI   the `web` client's registered URIs
//   ACR_MODE  see above (default honour)
//   USERS     also this many client-credentials clients `user-0`, `user-1`, ... (secret
//             `user-secret`): one principal each, for traffic with many subjects
import Provider from 'oidc-provider';
import { generateKeyPair, exportJWK } from 'jose';

const port = Number(process.env.PORT);
const kid = process.env.KID ?? 'key-1';
const alg = process.env.ALG ?? 'ES256';
const acrMode = process.env.ACR_MODE ?? 'honour';
const { privateKey } = await generateKeyPair(alg, { extractable: true, crv: alg === 'EdDSA' ? 'Ed25519' : undefined });
const jwk = { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' };

const clients = [
  {
    client_id: 'svc',
    client_secret: 'svc-secret',
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    id_token_signed_response_alg: alg,
  },
];
for (let i = 0; i < Number(process.env.USERS ?? 0); i++) {
  clients.push({
    client_id: `user-${i}`,
    client_secret: 'user-secret',
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    id_token_signed_response_alg: alg,
  });
}
if (process.env.REDIRECT_URI) {
  clients.push({
    client_id: 'web',
    client_secret: 'web-secret',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: process.env.REDIRECT_URI.split(','),
    post_logout_redirect_uris: process.env.POST_LOGOUT_URI ? [process.env.POST_LOGOUT_URI] : [],
    ...(process.env.BACKCHANNEL_URI
      ? { backchannel_logout_uri: process.env.BACKCHANNEL_URI, backchannel_logout_session_required: true }
      : {}),
    require_auth_time: true,
    id_token_signed_response_alg: alg,
  });
}

const provider = new Provider(`http://127.0.0.1:${port}`, {
  jwks: { keys: [jwk] },
  clients,
  acrValues: ['urn:pwd', 'urn:mfa'],
  claims: { amr: null, openid: ['sub'], profile: ['name', 'groups'] },
  findAccount: (ctx, id) => ({
    accountId: id,
    claims: () => ({ sub: id, name: 'Alice', groups: ['staff'] }),
  }),
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  // Everything in the tests is on loopback, which the provider's SSRF guard refuses to call;
  // lift it so back-channel logout reaches the gateway.
  fetch: (url, options) => {
    delete options.dispatcher;
    return globalThis.fetch(url, options);
  },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    claimsParameter: { enabled: true },
    backchannelLogout: { enabled: true },
    rpInitiatedLogout: {
      enabled: true,
      // A bare form the test client submits: `xsrf` plus `logout=yes`.
      logoutSource: (ctx, form) => {
        ctx.body = `<!DOCTYPE html><html><body>${form}</body></html>`;
      },
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'https://api.test',
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: 'read',
        audience: 'api',
        accessTokenTTL: Number(process.env.TTL ?? 300),
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg } },
      }),
    },
  },
});

// The interaction: sign in `alice` (login prompt) or grant what is asked (consent prompt).
provider.use(async (ctx, next) => {
  if (!ctx.path.startsWith('/interaction/')) return next();
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  let result;
  if (details.prompt.name === 'login') {
    const asked = (details.params.acr_values ?? '').split(' ').filter(Boolean);
    const acr = acrMode === 'low' || asked.length === 0 ? 'urn:pwd' : asked[asked.length - 1];
    result = { login: { accountId: 'alice', acr, amr: acr === 'urn:mfa' ? ['pwd', 'otp'] : ['pwd'] } };
  } else {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    const missing = details.prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    result = { consent: { grantId: await grant.save() } };
  }
  ctx.redirect(await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false }));
});

provider.on('backchannel.error', (ctx, err, clientId) => console.error(`back-channel logout to ${clientId} failed: ${err.message} ${err.cause ?? ''}`));

provider.listen(port, '127.0.0.1', () => console.log('ready'));
