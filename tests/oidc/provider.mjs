// A real OpenID provider for the end-to-end tests: oidc-provider, issuing JWT access tokens
// (RFC 9068) through the client-credentials grant. Its signing key is generated at start with
// the key id from KID, so restarting with another KID is a key rotation.
//   PORT  port on 127.0.0.1      KID  key id (default key-1)      ALG  ES256 (default), RS256, EdDSA
//   TTL   access token lifetime in seconds (default 300)
import Provider from 'oidc-provider';
import { generateKeyPair, exportJWK } from 'jose';

const port = Number(process.env.PORT);
const kid = process.env.KID ?? 'key-1';
const alg = process.env.ALG ?? 'ES256';
const { privateKey } = await generateKeyPair(alg, { extractable: true, crv: alg === 'EdDSA' ? 'Ed25519' : undefined });
const jwk = { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' };

const provider = new Provider(`http://127.0.0.1:${port}`, {
  jwks: { keys: [jwk] },
  clients: [
    {
      client_id: 'svc',
      client_secret: 'svc-secret',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      id_token_signed_response_alg: alg,
    },
  ],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
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
provider.listen(port, '127.0.0.1', () => console.log('ready'));
