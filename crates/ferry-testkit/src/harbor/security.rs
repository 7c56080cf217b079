//! Who a request comes from and what they may do: Harbor's security contexts (Bearer token on
//! `/v2`, robot, basic user, anonymous) and its RBAC, reduced to the permissions the double knows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::store::Store;
use super::{Account, AccountKind, HarborDouble, Perm};

/// Harbor's token issuer (`src/pkg/token/claims/v2/claims.go`).
pub const ISSUER: &str = "harbor-token-issuer";
/// The registry service the tokens are for (`src/core/service/token/creator.go`).
pub const SERVICE: &str = "harbor-registry";
/// `common.JwtLeeway`.
const LEEWAY_SECS: u64 = 60;

/// The security context of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Anonymous,
    /// An account of the configuration, by index.
    Account(usize),
    /// A valid Bearer token (`/v2` only): its subject and actions per project.
    Token {
        subject: String,
        access: BTreeMap<String, BTreeSet<String>>,
    },
}

impl Principal {
    /// `IsAuthenticated()`: a token counts only if it names someone.
    pub fn is_authenticated(&self) -> bool {
        match self {
            Principal::Anonymous => false,
            Principal::Account(_) => true,
            Principal::Token { subject, .. } => !subject.is_empty(),
        }
    }

    /// `GetUsername()`: empty for anonymous.
    pub fn name<'a>(&'a self, config: &'a HarborDouble) -> &'a str {
        match self {
            Principal::Anonymous => "",
            Principal::Account(i) => &config.accounts[*i].name,
            Principal::Token { subject, .. } => subject,
        }
    }

    pub fn account<'a>(&self, config: &'a HarborDouble) -> Option<&'a Account> {
        match self {
            Principal::Account(i) => config.accounts.get(*i),
            _ => None,
        }
    }
}

/// The JWT claims Harbor's token service signs (`MakeToken`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    pub access: Vec<Access>,
}

/// One entry of a token's `access` claim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// Signs and checks the double's tokens.
pub struct Signer {
    key: Vec<u8>,
    /// `jti` of every token handed out, and of those a test has made expire.
    issued: Mutex<Vec<String>>,
    expired: Mutex<BTreeSet<String>>,
}

impl Signer {
    pub fn new() -> Signer {
        let mut rng = fastrand::Rng::new();
        Signer {
            key: (0..32).map(|_| rng.u8(..)).collect(),
            issued: Mutex::new(Vec::new()),
            expired: Mutex::new(BTreeSet::new()),
        }
    }

    /// Every token handed out so far now fails its check, as one past its `exp` does.
    pub fn expire_all(&self) {
        let issued = std::mem::take(&mut *self.issued.lock().unwrap());
        self.expired.lock().unwrap().extend(issued);
    }

    pub fn sign(&self, subject: &str, access: Vec<Access>, lifetime: Duration) -> String {
        let now = now();
        let claims = Claims {
            iss: ISSUER.to_string(),
            sub: subject.to_string(),
            aud: SERVICE.to_string(),
            exp: now + lifetime.as_secs(),
            nbf: now,
            iat: now,
            jti: random_string(16),
            access,
        };
        self.issued.lock().unwrap().push(claims.jti.clone());
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(&self.key),
        )
        .expect("HS256 signing cannot fail")
    }

    /// The claims of a token this double signed, still valid for `harbor-registry`.
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.leeway = LEEWAY_SECS;
        v.set_audience(&[SERVICE]);
        v.set_issuer(&[ISSUER]);
        jsonwebtoken::decode::<Claims>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(&self.key),
            &v,
        )
        .ok()
        .map(|d| d.claims)
        .filter(|c| !self.expired.lock().unwrap().contains(&c.jti))
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Letters and digits, like Harbor's `GenerateRandomStringWithLen`.
pub fn random_string(len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = fastrand::Rng::new();
    (0..len)
        .map(|_| CHARS[rng.usize(..CHARS.len())] as char)
        .collect()
}

/// `(name, secret)` of an `Authorization: Basic` value.
pub fn basic_credentials(authorization: Option<&str>) -> Option<(String, String)> {
    let encoded = authorization?.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, secret) = text.split_once(':')?;
    Some((name.to_string(), secret.to_string()))
}

/// The security context, in the order of Harbor's generators (`security.go`): a v2 token on
/// `/v2`, a robot, a basic-auth user; anything else (wrong secrets included) is anonymous.
pub fn identify(
    config: &HarborDouble,
    signer: &Signer,
    authorization: Option<&str>,
    path: &str,
) -> Principal {
    if path.starts_with("/v2")
        && let Some(token) = authorization.and_then(|a| a.strip_prefix("Bearer "))
        && let Some(claims) = signer.verify(token.trim())
    {
        return Principal::Token {
            subject: claims.sub,
            access: token_access(&claims.access),
        };
    }
    let Some((name, secret)) = basic_credentials(authorization) else {
        return Principal::Anonymous;
    };
    let found = config.accounts.iter().position(|a| {
        // Robots only through the robot generator (name prefix), users through basic auth.
        a.is_robot() == name.starts_with("robot$")
            && a.name == name
            && a.secret == secret
            && !a.disabled
    });
    found.map_or(Principal::Anonymous, Principal::Account)
}

/// `v2token.New`: repository entries keyed by project, a later entry replacing an earlier one.
fn token_access(access: &[Access]) -> BTreeMap<String, BTreeSet<String>> {
    let mut map = BTreeMap::new();
    for a in access.iter().filter(|a| a.kind == "repository") {
        let project = a.name.split('/').next().unwrap_or_default().to_string();
        let mut actions = BTreeSet::new();
        for action in &a.actions {
            if action == "*" {
                actions.extend(["pull", "push", "delete"].map(String::from));
            } else {
                actions.insert(action.clone());
            }
        }
        map.insert(project, actions);
    }
    map
}

/// Whether `principal` may do `perm` in `project` (false for a project that does not exist).
pub fn can(
    config: &HarborDouble,
    store: &Store,
    principal: &Principal,
    project: &str,
    perm: Perm,
) -> bool {
    let Some(p) = store.project(project) else {
        return false;
    };
    if let Principal::Token { access, .. } = principal {
        let action = match perm {
            Perm::Pull => "pull",
            Perm::Push => "push",
            Perm::Delete => "delete",
            _ => return false,
        };
        return access.get(project).is_some_and(|a| a.contains(action));
    }
    // Everyone, anonymous included, gets the public project policies.
    if p.public && matches!(perm, Perm::Pull | Perm::ReadProject) {
        return true;
    }
    let Some(account) = principal.account(config) else {
        return false;
    };
    match &account.kind {
        AccountKind::Admin => true,
        AccountKind::User { roles } => roles
            .get(project)
            .or(store.member(project, &account.name))
            .is_some_and(|r| r.perms().contains(&perm)),
        AccountKind::SystemRobot { grants } => [project, "*"]
            .iter()
            .filter_map(|k| grants.get(*k))
            .any(|perms| perm != Perm::CreateProject && perms.contains(&perm)),
        AccountKind::ProjectRobot {
            project: own,
            perms,
        } => {
            own == project
                && (perms.contains(&perm) || (perm == Perm::Pull && perms.contains(&Perm::Push)))
        }
    }
}

/// `RequireSystemAccess(create, project)`: a system admin, or a system robot allowed to.
pub fn can_create_projects(config: &HarborDouble, principal: &Principal) -> bool {
    match principal.account(config).map(|a| &a.kind) {
        Some(AccountKind::Admin) => true,
        Some(AccountKind::SystemRobot { grants }) => grants
            .get("*")
            .is_some_and(|p| p.contains(&Perm::CreateProject)),
        _ => false,
    }
}

pub fn is_admin(config: &HarborDouble, principal: &Principal) -> bool {
    matches!(
        principal.account(config).map(|a| &a.kind),
        Some(AccountKind::Admin)
    )
}
