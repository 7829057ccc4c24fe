/* Postern's self-service page for mailbox users: log in with the mail address and password,
 * see the sending limits (HAMR) in effect and where they come from, the recent logins, and
 * change the password. Everything through /api/v1/self. Uses P (../common.js). */
'use strict';

const Self = { address: null };

const HAMR_LABELS = {
    'hamr.enabled': 'Limits enforced',
    'hamr.max_messages': 'Messages you may send',
    'hamr.interval': 'Per (seconds)',
    'hamr.action': 'Beyond the limit',
    'hamr.alert': 'Administrators alerted',
    'hamr.max_recipients': 'Recipients per message (0: any)',
    'hamr.alert_owner': 'You are alerted',
};
const SOURCES = {
    user: 'set for you', domain: 'your domain', system: 'the system', default: 'built-in default',
};

function showLogin(reason) {
    const had = Self.address !== null;
    Self.address = null;
    P.setCsrf('');
    P.$('self-page').hidden = true;
    P.$('self-whoami').hidden = true;
    P.$('self-logout').hidden = true;
    P.$('self-login').hidden = false;
    const err = P.$('self-login-error');
    if (had && reason) {
        err.textContent = 'Your session has ended (' + reason + ').';
        err.hidden = false;
    }
    P.$('self-login-password').value = '';
    P.$('self-login-address').focus();
}

async function load() {
    const d = await P.api('GET', '/api/v1/self', undefined, { login: !Self.address });
    Self.address = d.address;
    P.setCsrf(d.csrf);
    P.$('self-login').hidden = true;
    P.$('self-login-error').hidden = true;
    P.$('self-page').hidden = false;
    P.$('self-whoami').textContent = d.address;
    P.$('self-whoami').hidden = false;
    P.$('self-logout').hidden = false;
    P.$('self-address').textContent = d.address;
    render(d);
}

function render(d) {
    const h = d.hamr || {};
    const state = P.$('self-send-state');
    if (h.send_disabled) {
        P.fill(state, P.el('div', { class: 'msg msg-error', dataset: { test: 'send-disabled' } },
            P.el('strong', null, 'You may not send mail'), ' since ' + P.time(h.send_disabled.since) +
            (h.send_disabled.reason ? ' (' + h.send_disabled.reason + ')' : '') +
            '. You still receive mail. Ask your administrator to re-enable sending.'));
    } else {
        P.fill(state, P.el('p', { class: 'ok-line', dataset: { test: 'send-allowed' } },
            'You may send mail.'));
    }
    const settings = h.settings || [];
    P.fill('self-hamr', P.table([
        { title: 'Limit', cell: s => HAMR_LABELS[s.key] || s.key },
        { title: 'Value', cell: s => P.el('span', { class: 'value', dataset: { test: 'self-hamr-value',
            key: s.key, source: s.source } }, P.show(s.value)) },
        { title: 'Set by', cell: s => P.el('span', { class: 'src src-' + s.source }, SOURCES[s.source] || s.source) },
    ], settings, { empty: 'no limits known',
        rowProps: s => ({ dataset: { test: 'self-hamr-row', key: s.key } }) }));
    P.fill('self-logins', loginsTable(d.logins));
}

/* The logins (`mailctl --json user logins`): an array of objects, or an object holding one;
 * columns from the rows' members, the usual ones first. */
function loginsTable(d) {
    let rows = [];
    if (Array.isArray(d))
        rows = d;
    else if (d && typeof d === 'object')
        rows = Object.values(d).find(v => Array.isArray(v)) || [];
    const preferred = ['time', 'at', 'service', 'protocol', 'client_addr', 'client', 'mechanism', 'tls',
        'result'];
    const titles = { time: 'Time', at: 'Time', service: 'Service', protocol: 'Protocol',
        client_addr: 'From', client: 'From', mechanism: 'Mechanism', tls: 'TLS', result: 'Result',
        address: 'Address' };
    const keys = [];
    for (const r of rows)
        for (const k of Object.keys(r && typeof r === 'object' ? r : {}))
            if (!keys.includes(k))
                keys.push(k);
    if (keys.length === 0)
        keys.push('time', 'service', 'client_addr', 'result');
    keys.sort((a, b) => (preferred.indexOf(a) + 1 || 99) - (preferred.indexOf(b) + 1 || 99));
    return P.table(keys.map(k => ({
        title: titles[k] || k,
        cell: r => {
            const v = r ? r[k] : null;
            if (k === 'result')
                return P.el('span', { class: 'result result-' + (v === 'ok' ? 'ok' : 'bad') }, P.show(v));
            return k === 'time' || k === 'at' ? P.time(v) : P.show(v);
        },
    })), rows, { empty: 'no logins recorded yet', rowProps: () => ({ dataset: { test: 'self-login-row' } }) });
}

async function login(values) {
    const err = P.$('self-login-error');
    err.hidden = true;
    P.$('self-login-submit').disabled = true;
    try {
        const r = await P.api('POST', '/api/v1/self/login',
            { address: values.address || '', password: values.password || '' }, { login: true });
        P.setCsrf(r.csrf);
        Self.address = r.name || values.address;
        await load();
    } catch (e) {
        err.textContent = e.message;
        err.hidden = false;
    } finally {
        P.$('self-login-submit').disabled = false;
    }
}

async function changePassword(values, form) {
    P.clearMessages();
    if ((values.new || '').length < 8) {
        P.say('error', 'The new password is too short: at least 8 characters.');
        return;
    }
    if (values.new !== values.new2) {
        P.say('error', 'The two new passwords differ.');
        return;
    }
    const r = await P.run(() => P.api('PUT', '/api/v1/self/password',
        { current: values.current || '', new: values.new }),
    'Your password has been changed: use the new one in your mail programs too.');
    if (r)
        form.reset();
}

async function logout() {
    try {
        await P.api('POST', '/api/v1/self/logout');
    } catch (e) {
        /* gone already */
    }
    P.clearMessages();
    Self.address = null;
    showLogin();
}

async function start() {
    P.onUnauthorized(showLogin);
    P.onSubmit('self-login-form', login);
    P.onSubmit('self-password-form', changePassword);
    P.$('self-logout').addEventListener('click', logout);
    try {
        await load();
    } catch (e) {
        showLogin();
        if (e.status !== 401) {
            P.$('self-login-error').textContent = e.message;
            P.$('self-login-error').hidden = false;
        }
    }
}

start();
