// A real OpenID Connect provider for the single sign-on tests, on loopback only.
// PORT: where to listen; REDIRECT_URI: the Imagebank callback registered for the test client.
// Its development interaction screens ask for a login name (any password is accepted there): the
// tests exercise Imagebank as the relying party, not the provider's own password checks.
import http from 'node:http';
import Provider from 'oidc-provider';

const { PORT, REDIRECT_URI } = process.env;
const users = {
  alice: { sub: 'alice', email: 'alice@hospital.example', email_verified: true, name: 'Alice Example',
           preferred_username: 'alice' },
};
const provider = new Provider(`http://127.0.0.1:${PORT}`, {
  clients: [{
    client_id: 'imagebank', client_secret: 'imagebank-test-secret',
    redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code'], response_types: ['code'],
  }],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username'] },
  conformIdTokenClaims: false,
  findAccount: (ctx, id) => users[id] && { accountId: id, claims: async () => users[id] },
  cookies: { keys: ['test-only-cookie-key'] },
});
http.createServer(provider.callback()).listen(Number(PORT), '127.0.0.1', () => console.log('READY'));
