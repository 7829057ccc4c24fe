<?php
// GET /healthz: 200 "ok" when PHP runs, Roundcube's configuration loads (its key is there)
// and its database answers; 503 otherwise, the reason in the error log. The compose health
// check (postern-webmail health) and the chart's probes ask it.
header('Content-Type: text/plain; charset=utf-8');
header('Cache-Control: no-store');
try {
    $config = [];
    include '/etc/roundcube/config.inc.php';
    $path = preg_replace('#^sqlite:///([^?]*).*$#', '$1', $config['db_dsnw']);
    if (!is_file($path)) {
        throw new RuntimeException("no database at $path");
    }
    $db = new PDO('sqlite:' . $path, null, null, [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]);
    $db->query("SELECT value FROM system WHERE name = 'roundcube-version'")->fetch();
    echo "ok\n";
} catch (Throwable $e) {
    error_log('webmail /healthz: ' . $e->getMessage());
    http_response_code(503);
    echo "not ready\n";
}
