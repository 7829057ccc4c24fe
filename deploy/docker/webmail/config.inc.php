<?php
/*
 * Roundcube in Postern's webmail image (deploy/docker/webmail): the whole local
 * configuration, over Roundcube's defaults (/etc/roundcube/defaults.inc.php). What differs
 * between deployments comes from the environment, which docker-compose.yml and the Helm
 * chart set; nothing secret is written here.
 *
 *   WEBMAIL_IMAP_HOST   imapd, implicit TLS           (default ssl://imapd:2993)
 *   WEBMAIL_SMTP_HOST   smtpd's submission port, STARTTLS, AUTH as the logged-in user
 *                                                     (default tls://smtpd:2587)
 *   WEBMAIL_TLS_NAME    the name in imapd's and smtpd's certificate (default localhost:
 *                       the compose stack's self-signed one is made for SMTP_HOSTNAME)
 *   WEBMAIL_TLS_CA      the CA file that certificate is checked against (default: the
 *                       self-signed certificate itself, /etc/postern/tls/cert.pem); "system"
 *                       for the system's CAs (a certificate from a public CA)
 *   WEBMAIL_DATA        Roundcube's SQLite database and key (a volume)
 *   ROUNDCUBE_DES_KEY, ROUNDCUBE_DES_KEY_FILE   the key Roundcube encrypts the IMAP password
 *                       in its sessions with; default: WEBMAIL_DATA/des_key, made on the
 *                       first start (postern-webmail, the entrypoint)
 *   WEBMAIL_PRODUCT_NAME, WEBMAIL_USERNAME_DOMAIN (added to logins without "@"),
 *   WEBMAIL_SESSION_MINUTES (default 30), WEBMAIL_LANGUAGE (default: the browser's)
 */

$env = function ($name, $default = '') {
    $v = getenv($name);
    return ($v === false || $v === '') ? $default : $v;
};

$config = [];

// ---- Roundcube's own state: SQLite in the data volume ----------------------------------
$data = rtrim($env('WEBMAIL_DATA', '/var/lib/postern-webmail'), '/');
$config['db_dsnw'] = 'sqlite:///' . $data . '/roundcube.db?mode=0600';

// ---- imapd and smtpd, over TLS, their certificate checked --------------------------------
$ca = $env('WEBMAIL_TLS_CA', '/etc/postern/tls/cert.pem');
$tls = [
    'verify_peer'       => true,
    'verify_peer_name'  => true,
    'allow_self_signed' => false,
    'peer_name'         => $env('WEBMAIL_TLS_NAME', 'localhost'),
    'SNI_enabled'       => true,
    'crypto_method'     => STREAM_CRYPTO_METHOD_TLSv1_2_CLIENT | STREAM_CRYPTO_METHOD_TLSv1_3_CLIENT,
];
if ($ca !== 'system') {
    $tls['cafile'] = $ca;
}

$config['imap_host'] = $env('WEBMAIL_IMAP_HOST', 'ssl://imapd:2993');
$config['imap_conn_options'] = ['ssl' => $tls];
$config['imap_timeout'] = 30;

// Mail is sent as the user who logged in, with the same password (smtpd allows only the
// addresses that user owns as senders).
$config['smtp_host'] = $env('WEBMAIL_SMTP_HOST', 'tls://smtpd:2587');
$config['smtp_user'] = '%u';
$config['smtp_pass'] = '%p';
$config['smtp_conn_options'] = ['ssl' => $tls];
$config['smtp_timeout'] = 30;

$config['username_domain'] = $env('WEBMAIL_USERNAME_DOMAIN', '');
// One identity per user, its address fixed (smtpd would refuse another one anyway).
$config['identities_level'] = 3;
// Sent, Drafts, Junk and Trash made on the first login.
$config['create_default_folders'] = true;

// ---- the key for the passwords kept in sessions --------------------------------------------
$key = $env('ROUNDCUBE_DES_KEY');
if ($key === '') {
    $file = $env('ROUNDCUBE_DES_KEY_FILE', $data . '/des_key');
    $key = is_readable($file) ? trim((string) file_get_contents($file)) : '';
}
if (strlen($key) < 24) {
    // Never the sample's well-known key: refuse to run instead.
    throw new RuntimeException('webmail: no key (ROUNDCUBE_DES_KEY or ROUNDCUBE_DES_KEY_FILE, 24 characters or more)');
}
$config['des_key'] = $key;
$config['cipher_method'] = 'AES-256-CBC';

// ---- sessions, logins ------------------------------------------------------------------
$config['session_lifetime'] = (int) $env('WEBMAIL_SESSION_MINUTES', '30');
$config['session_samesite'] = 'Strict';
$config['ip_check'] = true;
$config['login_rate_limit'] = 3;
$config['log_logins'] = true;

// ---- the rest: logs to the container's output, temporary files in /tmp, nothing external
$config['log_driver'] = 'stdout';
$config['temp_dir'] = '/tmp/roundcube/';
$config['enable_installer'] = false;
$config['enable_spellcheck'] = false;
$config['product_name'] = $env('WEBMAIL_PRODUCT_NAME', 'Postern Webmail');
$config['useragent'] = 'Postern Webmail';
$config['support_url'] = '';
$config['skin'] = 'elastic';
$config['plugins'] = [];
$language = $env('WEBMAIL_LANGUAGE');
if ($language !== '') {
    $config['language'] = $language;
}
