/* Postern's administration console: one page, a section per concern (the hash in the URL
 * names it), everything through /api/v1 (the same commands as mailctl). System admins see
 * every section; domain admins only Domains & users and HAMR, for their own domains.
 * Uses P (common.js). */
'use strict';

const App = {
    session: null,     /* {kind, name, role, domains, csrf} */
    section: null,
    dashTimer: null,
    dashBusy: false,
    usersDomain: null, /* the domain whose users are shown */
    hamr: { domain: null, user: null },
};

const enc = encodeURIComponent;
const isSystem = () => App.session && App.session.role === 'system';

const SECTIONS = {
    dashboard: { system: true, load: () => startDashboard() },
    domains: { system: false, load: () => loadDomains() },
    relay: { system: true, load: () => loadRelay() },
    hamr: { system: false, load: () => loadHamr() },
    'hamr-status': { system: true, load: () => loadHamrStatus() },
    harvest: { system: true, load: () => loadHarvest() },
    alerts: { system: true, load: () => loadAlerts() },
    queue: { system: true, load: () => loadQueue() },
    admins: { system: true, load: () => loadAdmins() },
};

/* ---- login, session, navigation ------------------------------------------------------ */

function showLogin(reason) {
    stopDashboard();
    const hadSession = App.session !== null;
    App.session = null;
    P.setCsrf('');
    P.$('app').hidden = true;
    P.$('whoami').hidden = true;
    P.$('logout').hidden = true;
    P.$('login').hidden = false;
    const err = P.$('login-error');
    if (hadSession && reason) {
        err.textContent = 'Your session has ended (' + reason + ').';
        err.hidden = false;
    }
    P.$('login-password').value = '';
    P.$('login-user').focus();
}

function loggedIn(session) {
    App.session = session;
    P.setCsrf(session.csrf);
    P.$('login').hidden = true;
    P.$('login-error').hidden = true;
    P.$('app').hidden = false;
    const who = P.$('whoami');
    who.textContent = session.name + ' (' + (session.role === 'system' ? 'system admin'
        : 'admin of ' + (session.domains || []).join(', ')) + ')';
    who.hidden = false;
    P.$('logout').hidden = false;
    document.body.classList.toggle('role-domain', !isSystem());
    for (const e of document.querySelectorAll('.system-only'))
        e.hidden = !isSystem();
    route();
}

async function login(values) {
    const err = P.$('login-error');
    err.hidden = true;
    P.$('login-submit').disabled = true;
    try {
        await P.api('POST', '/api/v1/login', { user: values.user || '', password: values.password || '' },
            { login: true });
        /* The login's answer has the CSRF token; the session has the role and domains too. */
        const s = await P.api('GET', '/api/v1/session');
        loggedIn(s);
    } catch (e) {
        err.textContent = e.message;
        err.hidden = false;
    } finally {
        P.$('login-submit').disabled = false;
    }
}

async function logout() {
    try {
        await P.api('POST', '/api/v1/logout');
    } catch (e) {
        /* gone already: the login form either way */
    }
    App.session = null;
    P.clearMessages();
    showLogin();
}

function defaultSection() {
    return isSystem() ? 'dashboard' : 'domains';
}

function route() {
    if (!App.session)
        return;
    let name = location.hash.replace(/^#/, '');
    const sec = SECTIONS[name];
    if (!sec || (sec.system && !isSystem())) {
        name = defaultSection();
        if (location.hash !== '#' + name) {
            history.replaceState(null, '', '#' + name);
        }
    }
    if (App.section !== name)
        P.clearMessages();
    App.section = name;
    for (const s of document.querySelectorAll('.section'))
        s.hidden = s.id !== 'sec-' + name;
    for (const a of document.querySelectorAll('#nav a'))
        a.classList.toggle('active', a.dataset.section === name);
    if (name !== 'dashboard')
        stopDashboard();
    SECTIONS[name].load();
}

function go(section) {
    if (location.hash === '#' + section)
        route();
    else
        location.hash = section;
}

/* Loads a part of a page: on failure, the error goes into the container. */
async function loadInto(container, fn) {
    try {
        await fn();
    } catch (e) {
        if (e.status !== 401)
            P.fill(container, P.el('p', { class: 'form-error', dataset: { test: 'load-error' } },
                'Could not load: ' + e.message));
    }
}

function src(source) {
    return P.el('span', { class: 'src src-' + source, title: 'comes from: ' + source }, source);
}

/* ---- dashboard ------------------------------------------------------------------------ */

const FIGURES = [
    { group: 'Traffic in the last hour', items: [
        { key: 'messages_hour', label: 'Messages stored' },
        { key: 'logins_hour', label: 'Logins' },
        { key: 'failures_hour', label: 'Failed logins', warn: v => v > 0 },
    ] },
    { group: 'Protection', items: [
        { key: 'blocks', label: 'Blocked addresses', link: 'harvest', warn: v => v > 0 },
        { key: 'exemptions', label: 'Exempt networks', link: 'harvest' },
        { key: 'throttled', label: 'Throttled users', link: 'hamr-status', warn: v => v > 0 },
        { key: 'disabled', label: 'Disabled accounts', link: 'hamr-status', warn: v => v > 0 },
    ] },
    { group: 'Outbound queue', items: [
        { key: 'queue', label: 'Queued messages', link: 'queue' },
        { key: 'queue_age_s', label: 'Oldest queued', link: 'queue', fmt: v => (v ? P.duration(v) : '—'),
            warn: v => v > 3600 },
    ] },
    { group: 'Hosting', items: [
        { key: 'domains', label: 'Domains', link: 'domains' },
        { key: 'users', label: 'Users', link: 'domains' },
    ] },
];

function startDashboard() {
    stopDashboard();
    loadDashboard();
    App.dashTimer = setInterval(loadDashboard, 5000);
}

function stopDashboard() {
    if (App.dashTimer)
        clearInterval(App.dashTimer);
    App.dashTimer = null;
}

async function loadDashboard() {
    if (App.dashBusy || App.section !== 'dashboard' || !App.session)
        return;
    App.dashBusy = true;
    try {
        const d = await P.api('GET', '/api/v1/dashboard');
        const figure = f => {
            const v = d[f.key];
            return P.el(f.link ? 'a' : 'div', {
                class: 'figure' + (f.warn && f.warn(v) ? ' warn' : ''),
                href: f.link ? '#' + f.link : null,
                id: 'fig-' + f.key,
                dataset: { test: 'fig-' + f.key },
            },
            P.el('span', { class: 'figure-value', dataset: { test: 'fig-value' } },
                v === undefined ? '—' : f.fmt ? f.fmt(v) : String(v)),
            P.el('span', { class: 'figure-label' }, f.label));
        };
        const cards = FIGURES.map(g => P.el('div', { class: 'figure-group' },
            P.el('h3', null, g.group), P.el('div', { class: 'figures' }, g.items.map(figure))));
        P.fill('dash-figures', cards);
        P.$('dash-updated').textContent = 'Updated ' + new Date().toLocaleTimeString() + '.';
        P.$('dash-updated').classList.remove('form-error');
    } catch (e) {
        if (e.status !== 401) {
            P.$('dash-updated').textContent = 'Not updated: ' + e.message;
            P.$('dash-updated').classList.add('form-error');
        }
    } finally {
        App.dashBusy = false;
    }
}

/* ---- domains & users ------------------------------------------------------------------ */

async function loadDomains() {
    await loadInto('domains-table', async () => {
        const d = await P.api('GET', '/api/v1/domains');
        const domains = d.domains || [];
        P.fill('domains-table', P.table([
            { title: 'Domain', cell: r => P.el('button', { type: 'button', class: 'link',
                dataset: { test: 'domain-users' }, on: { click: () => showUsers(r.name) } }, r.name) },
            { title: 'Users', class: 'num', cell: r => String(r.users) },
            { title: 'Created', class: 'nowrap', cell: r => P.el('span', { title: P.time(r.created_at) },
                String(r.created_at || '').slice(0, 10)) },
            { title: '', class: 'actions nowrap', cell: r => [
                P.el('button', { type: 'button', dataset: { test: 'domain-hamr' },
                    on: { click: () => openHamr(r.name, null) } }, 'HAMR'),
                isSystem() ? P.confirmButton('Delete', 'Delete ' + r.name + ' and all its mailboxes?',
                    () => deleteDomain(r.name), { dataset: { test: 'domain-delete' } }) : null,
            ] },
        ], domains, {
            empty: 'no domains yet',
            rowProps: r => ({ dataset: { test: 'domain-row', name: r.name },
                class: r.name === App.usersDomain ? 'selected' : null }),
        }));
        if (!App.usersDomain && domains.length === 1)
            App.usersDomain = domains[0].name;
        if (App.usersDomain && !domains.some(x => x.name === App.usersDomain))
            App.usersDomain = null;
        await loadUsers();
    });
}

async function deleteDomain(name) {
    const r = await P.run(() => P.api('DELETE', '/api/v1/domains/' + enc(name)),
        'Domain ' + name + ' deleted.');
    if (r && App.usersDomain === name)
        App.usersDomain = null;
    loadDomains();
}

function showUsers(domain) {
    App.usersDomain = domain;
    P.$('logins-panel').hidden = true;
    P.$('user-passwd-form').hidden = true;
    for (const tr of document.querySelectorAll('[data-test="domain-row"]'))
        tr.classList.toggle('selected', tr.dataset.name === domain);
    loadUsers();
}

async function loadUsers() {
    const domain = App.usersDomain;
    P.$('users-domain').textContent = domain || '—';
    P.$('users-hint').hidden = !!domain;
    P.$('user-add-form').hidden = !domain;
    if (!domain) {
        P.fill('users-table');
        return;
    }
    await loadInto('users-table', async () => {
        const d = await P.api('GET', '/api/v1/users?domain=' + enc(domain));
        P.fill('users-table', P.table([
            { title: 'Address', cell: r => r.address },
            { title: 'Created', class: 'nowrap', cell: r => P.el('span', { title: P.time(r.created_at) },
                String(r.created_at || '').slice(0, 10)) },
            { title: '', class: 'actions', cell: r => [
                P.el('button', { type: 'button', dataset: { test: 'user-logins' },
                    on: { click: () => showLogins(r.address) } }, 'Logins'),
                P.el('button', { type: 'button', dataset: { test: 'user-passwd' },
                    on: { click: () => askPassword(r.address) } }, 'Password'),
                P.el('button', { type: 'button', dataset: { test: 'user-hamr' },
                    on: { click: () => openHamr(domain, r.address) } }, 'HAMR'),
                P.confirmButton('Delete', 'Delete ' + r.address + ' and its mail?',
                    () => deleteUser(r.address), { dataset: { test: 'user-delete' } }),
            ] },
        ], d.users || [], {
            empty: 'no users in ' + domain,
            rowProps: r => ({ dataset: { test: 'user-row', address: r.address } }),
        }));
    });
}

function fullAddress(text) {
    const t = text.trim();
    return t.includes('@') || !App.usersDomain ? t : t + '@' + App.usersDomain;
}

async function addUser(values, form) {
    const address = fullAddress(values.address || '');
    const r = await P.run(() => P.api('POST', '/api/v1/users', { address, password: values.password || '' }),
        'User ' + address + ' added.');
    if (r) {
        form.reset();
        loadDomains();
    }
}

async function deleteUser(address) {
    await P.run(() => P.api('DELETE', '/api/v1/users/' + enc(address)), 'User ' + address + ' deleted.');
    P.$('logins-panel').hidden = true;
    loadDomains();
}

function askPassword(address) {
    const f = P.$('user-passwd-form');
    f.dataset.address = address;
    P.$('user-passwd-address').textContent = address;
    f.hidden = false;
    P.$('user-passwd-new').value = '';
    P.$('user-passwd-new').focus();
}

async function changeUserPassword(values, form) {
    const address = form.dataset.address;
    const r = await P.run(() => P.api('PUT', '/api/v1/users/' + enc(address) + '/password',
        { password: values.password || '' }), 'Password of ' + address + ' changed.');
    if (r) {
        form.reset();
        form.hidden = true;
    }
}

async function showLogins(address) {
    P.$('logins-panel').hidden = false;
    P.$('logins-user').textContent = address;
    P.fill('logins-table', P.el('p', { class: 'muted' }, 'loading…'));
    await loadInto('logins-table', async () => {
        const d = await P.api('GET', '/api/v1/users/' + enc(address) + '/logins?limit=50');
        P.fill('logins-table', loginsTable(d));
    });
}

/* The logins of `user logins --json`: an array of {time, service, client_addr, mechanism,
 * tls, result} (or an object holding such an array): columns from the rows' members. */
function loginsTable(d) {
    let rows = Array.isArray(d) ? d : [];
    if (!Array.isArray(d) && d && typeof d === 'object') {
        const arr = Object.values(d).find(v => Array.isArray(v));
        rows = arr || [];
    }
    const preferred = ['time', 'at', 'service', 'protocol', 'client_addr', 'client', 'mechanism', 'tls',
        'result'];
    const keys = [];
    for (const r of rows)
        for (const k of Object.keys(r || {}))
            if (!keys.includes(k))
                keys.push(k);
    if (keys.length === 0)
        keys.push('time', 'service', 'client_addr', 'result');
    keys.sort((a, b) => (preferred.indexOf(a) + 1 || 99) - (preferred.indexOf(b) + 1 || 99));
    const titles = { time: 'Time', at: 'Time', service: 'Service', client_addr: 'Client',
        mechanism: 'Mechanism', tls: 'TLS', result: 'Result' };
    return P.table(keys.map(k => ({
        title: titles[k] || k,
        cell: r => (k === 'result' ? P.el('span', { class: 'result result-' +
            (r[k] === 'ok' ? 'ok' : 'bad') }, P.show(r[k]))
            : k === 'time' || k === 'at' ? P.time(r[k]) : P.show(r[k])),
    })), rows, { empty: 'no logins recorded', rowProps: () => ({ dataset: { test: 'login-row' } }) });
}

/* ---- relay ---------------------------------------------------------------------------- */

async function loadRelay() {
    await loadInto('relay-networks-table', async () => {
        const r = await P.api('GET', '/api/v1/relay');
        P.$('relay-mode').value = r.mode;
        P.fill('relay-networks-table', P.table([
            { title: 'Network', cell: x => x.network },
            { title: 'Added', cell: x => P.time(x.created_at) },
            { title: '', class: 'actions', cell: x => P.confirmButton('Remove',
                'Stop relaying for ' + x.network + '?', () => relayDeny(x.network)) },
        ], r.networks || [], { empty: 'no relay networks',
            rowProps: x => ({ dataset: { test: 'relay-network-row', network: x.network } }) }));
    });
    await loadInto('tls-table', async () => {
        const t = await P.api('GET', '/api/v1/relay/tls-policies');
        P.$('tls-default').textContent = t.default || '—';
        P.fill('tls-table', P.table([
            { title: 'Domain', cell: x => x.domain },
            { title: 'Policy', cell: x => x.policy },
            { title: 'Updated', cell: x => P.time(x.updated_at) },
            { title: '', class: 'actions', cell: x => P.el('button', { type: 'button',
                on: { click: () => tlsUnset(x.domain) } }, 'Remove') },
        ], t.tls_policies || [], { empty: 'no policies: the default applies',
            rowProps: x => ({ dataset: { test: 'tls-row', domain: x.domain } }) }));
    });
    await loadInto('transports-table', async () => {
        const t = await P.api('GET', '/api/v1/transports');
        P.fill('transports-table', P.table([
            { title: 'Domain', cell: x => x.domain },
            { title: 'Host', cell: x => x.host },
            { title: 'Port', class: 'num', cell: x => String(x.port) },
            { title: 'Updated', cell: x => P.time(x.updated_at) },
            { title: '', class: 'actions', cell: x => P.confirmButton('Remove',
                'Remove the transport of ' + x.domain + '?', () => transportDel(x.domain)) },
        ], t.transports || [], { empty: 'no transports: mail goes to the MX hosts',
            rowProps: x => ({ dataset: { test: 'transport-row', domain: x.domain } }) }));
    });
}

async function relayDeny(network) {
    await P.run(() => P.api('DELETE', '/api/v1/relay/networks?network=' + enc(network)),
        network + ' removed from the relay networks.');
    loadRelay();
}

async function tlsUnset(domain) {
    await P.run(() => P.api('DELETE', '/api/v1/relay/tls-policies/' + enc(domain)),
        'TLS policy of ' + domain + ' removed.');
    loadRelay();
}

async function transportDel(domain) {
    await P.run(() => P.api('DELETE', '/api/v1/transports/' + enc(domain)),
        'Transport of ' + domain + ' removed.');
    loadRelay();
}

/* ---- HAMR ----------------------------------------------------------------------------- */

const HAMR_LABELS = {
    'hamr.enabled': 'Enabled',
    'hamr.max_messages': 'Maximum messages',
    'hamr.interval': 'Interval (seconds)',
    'hamr.action': 'Action at the limit',
    'hamr.alert': 'Alert the alert addresses',
    'hamr.max_recipients': 'Recipients per message (0: any)',
    'hamr.alert_owner': 'Alert the account owner',
};
const HAMR_CHOICES = {
    'hamr.enabled': ['on', 'off'],
    'hamr.alert': ['on', 'off'],
    'hamr.alert_owner': ['on', 'off'],
    'hamr.action': ['throttle', 'disable'],
};

function hamrField(s) {
    return String(s.option || s.key).replace(/^--/, '').replace(/^hamr\./, '').replace(/-/g, '_');
}

function openHamr(domain, user) {
    App.hamr.domain = domain;
    App.hamr.user = user;
    go('hamr');
}

async function loadHamr() {
    await loadInto('hamr-table', async () => {
        const dl = await P.api('GET', '/api/v1/domains');
        const domains = (dl.domains || []).map(d => d.name);
        if (!domains.includes(App.hamr.domain))
            App.hamr.domain = domains[0] || null;
        const dsel = P.$('hamr-domain');
        P.fill(dsel, domains.length ? domains.map(n => P.el('option', { value: n }, n))
            : P.el('option', { value: '' }, '(no domains)'));
        dsel.value = App.hamr.domain || '';
        let users = [];
        if (App.hamr.domain) {
            const ul = await P.api('GET', '/api/v1/users?domain=' + enc(App.hamr.domain));
            users = (ul.users || []).map(u => u.address);
        }
        if (!users.includes(App.hamr.user))
            App.hamr.user = users[0] || null;
        const usel = P.$('hamr-user');
        P.fill(usel, users.length ? users.map(n => P.el('option', { value: n }, n))
            : P.el('option', { value: '' }, '(no users)'));
        usel.value = App.hamr.user || '';
        await renderHamr();
    });
}

async function renderHamr() {
    const { domain, user } = App.hamr;
    const [sys, dom, usr] = await Promise.all([
        isSystem() ? P.api('GET', '/api/v1/hamr/system') : Promise.resolve(null),
        domain ? P.api('GET', '/api/v1/hamr/domains/' + enc(domain)) : Promise.resolve(null),
        user ? P.api('GET', '/api/v1/hamr/users/' + enc(user)) : Promise.resolve(null),
    ]);
    /* A domain admin may not read the system level: what the domain's answer says of it. */
    let system = sys;
    if (!system && (dom || usr)) {
        const base = dom || usr;
        system = { scope: 'system', settings: base.settings.map(s => ({
            key: s.key, option: s.option, default: s.default, system: s.system,
            value: s.system !== null && s.system !== undefined ? s.system : s.default,
            source: s.system !== null && s.system !== undefined ? 'system' : 'default',
        })) };
    }
    const levels = [
        { level: 'system', title: 'System', data: system, editable: isSystem(),
            path: '/api/v1/hamr/system', reset: 'Reset every user',
            question: 'Remove the user-level HAMR settings of every user?' },
        { level: 'domain', title: domain ? 'Domain ' + domain : 'Domain (none)', data: dom, editable: !!dom,
            path: '/api/v1/hamr/domains/' + enc(domain || ''), reset: 'Reset the domain\'s users',
            question: 'Remove the user-level HAMR settings of every user of ' + domain + '?' },
        { level: 'user', title: user ? 'User ' + user : 'User (none)', data: usr, editable: !!usr,
            path: '/api/v1/hamr/users/' + enc(user || ''), reset: 'Reset this user',
            question: 'Remove the HAMR settings of ' + user + '?' },
    ];
    const base = (system || dom || usr);
    const keys = base ? base.settings.map(s => s.key) : Object.keys(HAMR_LABELS);
    const head = P.el('tr', null, P.el('th', null, 'Setting'),
        levels.map(l => P.el('th', { dataset: { test: 'hamr-head-' + l.level } }, l.title)));
    const body = P.el('tbody');
    for (const key of keys) {
        const tr = P.el('tr', { dataset: { test: 'hamr-row', key } },
            P.el('th', { scope: 'row' }, HAMR_LABELS[key] || key));
        for (const l of levels)
            tr.appendChild(hamrCell(l, key));
        body.appendChild(tr);
    }
    const foot = P.el('tr', { class: 'hamr-actions' }, P.el('th'), levels.map(l => {
        if (!l.editable)
            return P.el('td', { class: 'muted' }, l.level === 'system' ? 'system admins only' : '');
        return P.el('td', null,
            P.el('button', { type: 'button', id: 'hamr-' + l.level + '-save', class: 'primary',
                on: { click: () => hamrSave(l) } }, 'Save'),
            P.el('button', { type: 'button', id: 'hamr-' + l.level + '-unset',
                on: { click: () => hamrUnset(l) } }, 'Unset ticked'),
            P.confirmButton(l.reset, l.question, () => hamrReset(l), { id: 'hamr-' + l.level + '-reset' }));
    }));
    body.appendChild(foot);
    P.fill('hamr-table', P.el('table', { class: 'grid hamr' }, P.el('thead', null, head), body));
    /* Pressing Enter in a field saves that field's level. */
    P.$('hamr-form').onsubmit = ev => {
        ev.preventDefault();
        const lv = document.activeElement && document.activeElement.dataset.level;
        const l = levels.find(x => x.level === lv);
        if (l && l.editable)
            hamrSave(l);
    };

    const dis = P.$('hamr-disabled');
    dis.replaceChildren();
    if (usr && usr.send_disabled) {
        dis.appendChild(P.el('div', { class: 'msg msg-warning', dataset: { test: 'hamr-send-disabled' } },
            P.el('strong', null, user + ' may not send'), ' since ' + P.time(usr.send_disabled.since) +
            (usr.send_disabled.reason ? ': ' + usr.send_disabled.reason : '') + ' ',
            P.el('button', { type: 'button', id: 'hamr-enable', on: { click: () => hamrEnable(user) } },
                'Re-enable sending')));
    }
}

function hamrCell(l, key) {
    const td = P.el('td', { class: 'hamr-cell', dataset: { level: l.level } });
    const s = l.data ? l.data.settings.find(x => x.key === key) : null;
    if (!s) {
        td.appendChild(P.el('span', { class: 'muted' }, '—'));
        return td;
    }
    const field = hamrField(s);
    const own = s[l.level];
    td.appendChild(P.el('div', { class: 'eff' },
        P.el('span', { class: 'value', id: 'hamr-' + l.level + '-' + field,
            dataset: { test: 'hamr-value', source: s.source, field } }, P.show(s.value)),
        ' ', src(s.source)));
    if (!l.editable)
        return td;
    const id = 'hamr-' + l.level + '-input-' + field;
    const placeholder = own !== null && own !== undefined ? 'set: ' + own : 'inherit';
    let input;
    if (HAMR_CHOICES[key]) {
        input = P.el('select', { id, name: field, dataset: { level: l.level },
            'aria-label': (HAMR_LABELS[key] || key) + ' at ' + l.level },
        P.el('option', { value: '' }, own !== null && own !== undefined ? 'keep: ' + own : '— inherit —'),
        HAMR_CHOICES[key].map(c => P.el('option', { value: c }, c)));
    } else {
        input = P.el('input', { id, name: field, type: 'number', min: '0', inputmode: 'numeric',
            placeholder, dataset: { level: l.level }, 'aria-label': (HAMR_LABELS[key] || key) + ' at ' + l.level });
    }
    const edit = P.el('div', { class: 'edit' }, input);
    if (own !== null && own !== undefined) {
        edit.appendChild(P.el('label', { class: 'unset' },
            P.el('input', { type: 'checkbox', id: 'hamr-' + l.level + '-unset-' + field,
                dataset: { field, level: l.level } }), ' unset'));
    }
    td.appendChild(edit);
    return td;
}

function hamrLevelInputs(l) {
    return Array.from(document.querySelectorAll('#hamr-table [data-level="' + l.level + '"]'))
        .filter(e => e.id && e.id.startsWith('hamr-' + l.level + '-input-'));
}

async function hamrSave(l) {
    const body = {};
    for (const e of hamrLevelInputs(l))
        if (e.value.trim() !== '')
            body[e.name] = e.value.trim();
    if (Object.keys(body).length === 0) {
        P.clearMessages();
        P.say('error', 'Nothing to save at the ' + l.level + ' level: fill in a field first.');
        return;
    }
    const r = await P.run(() => P.api('PUT', l.path, body), res => {
        const changes = (res && res.changes) || [];
        const text = changes.map(c => c.key.replace(/^hamr\./, '') + '=' + c.value).join(', ');
        return 'HAMR ' + l.title.toLowerCase() + ': ' + (res && res.changed === false ? 'nothing changed'
            : 'set ' + (text || Object.keys(body).join(', '))) + '.';
    });
    if (r)
        renderHamr().catch(showLoadError);
}

async function hamrUnset(l) {
    const fields = Array.from(document.querySelectorAll('#hamr-table input[type=checkbox]'))
        .filter(c => c.dataset.level === l.level && c.checked).map(c => c.dataset.field);
    if (fields.length === 0) {
        P.clearMessages();
        P.say('error', 'Nothing to unset at the ' + l.level + ' level: tick "unset" beside a value set there.');
        return;
    }
    const r = await P.run(() => P.api('DELETE', l.path + '?fields=' + enc(fields.join(','))),
        'HAMR ' + l.title.toLowerCase() + ': unset ' + fields.join(', ') + '.');
    if (r)
        renderHamr().catch(showLoadError);
}

async function hamrReset(l) {
    const r = await P.run(() => P.api('POST', l.path + '/reset'), res => 'HAMR reset (' + l.title +
        '): ' + (res.settings_deleted !== undefined ? res.settings_deleted + ' user-level setting(s) of ' +
            res.users + ' user(s) removed' : 'done') +
        (res.still_disabled ? '; ' + res.still_disabled + ' account(s) still disabled' : '') + '.');
    if (r)
        renderHamr().catch(showLoadError);
}

async function hamrEnable(user) {
    const r = await P.run(() => P.api('POST', '/api/v1/hamr/users/' + enc(user) + '/enable'),
        res => (res && res.changed === false ? user + ' was not disabled.' : user + ' may send again.'));
    if (r) {
        if (App.section === 'hamr')
            renderHamr().catch(showLoadError);
        else
            loadHamrStatus();
    }
}

function showLoadError(e) {
    if (e.status !== 401)
        P.say('error', e.message);
}

/* ---- HAMR status ---------------------------------------------------------------------- */

async function loadHamrStatus() {
    await loadInto('hamr-disabled-table', async () => {
        const s = await P.api('GET', '/api/v1/hamr/status');
        P.fill('hamr-disabled-table', P.table([
            { title: 'Address', cell: r => r.address },
            { title: 'Since', cell: r => P.time(r.since) },
            { title: 'Reason', cell: r => r.reason },
            { title: '', class: 'actions', cell: r => P.el('button', { type: 'button',
                dataset: { test: 'enable' }, on: { click: () => hamrEnable(r.address) } }, 'Re-enable') },
        ], s.disabled || [], { empty: 'no account is disabled',
            rowProps: r => ({ dataset: { test: 'disabled-row', address: r.address } }) }));
        P.fill('hamr-throttled-table', P.table([
            { title: 'Address', cell: r => r.address },
            { title: 'Since', cell: r => P.time(r.since) },
            { title: 'Refused', class: 'num', cell: r => String(r.refused) },
            { title: 'Until', cell: r => P.time(r.until) },
            { title: 'Reason', cell: r => r.reason },
        ], s.throttled || [], { empty: 'nobody is throttled',
            rowProps: r => ({ dataset: { test: 'throttled-row', address: r.address } }) }));
        P.fill('hamr-alerts-table', P.table([
            { title: 'User', cell: r => r.user },
            { title: 'Alerts', class: 'num', cell: r => String(r.alerts) },
            { title: 'First', cell: r => P.time(r.first) },
            { title: 'Last', cell: r => P.time(r.last) },
        ], s.alerts_24h || [], { empty: 'no alerts',
            rowProps: r => ({ dataset: { test: 'alert-row', user: r.user } }) }));
        const lim = s.limiter || {};
        const lease = lim.lease || {};
        P.$('hamr-limiter').textContent = lim.error ? 'Limiter: ' + lim.error
            : lease.replica ? 'Limiter: ' + lease.replica + ' ' + (lease.state || '') +
                (lease.owns ? ', owns ' + lease.owns : '') : '';
    });
}

/* ---- harvesting ----------------------------------------------------------------------- */

const HARVEST_FIELDS = [
    { field: 'enabled', label: 'Enabled', choices: ['on', 'off'] },
    { field: 'max_failures', label: 'Failed logins before a block' },
    { field: 'interval', label: 'Within (seconds)' },
    { field: 'block', label: 'Block for (seconds)' },
    { field: 'soft_limit', label: 'Invalid recipients before slowing down (SMTP)' },
    { field: 'hard_limit', label: 'Invalid recipients before a block (SMTP)' },
];

function buildHarvestForm() {
    const box = P.$('harvest-fields');
    if (box.childElementCount)
        return;
    for (const f of HARVEST_FIELDS) {
        const id = 'harvest-input-' + f.field;
        const input = f.choices
            ? P.el('select', { id, name: f.field }, P.el('option', { value: '' }, '— keep'),
                f.choices.map(c => P.el('option', { value: c }, c)))
            : P.el('input', { id, name: f.field, type: 'number', min: '0', placeholder: 'keep' });
        box.appendChild(P.el('div', { class: 'field' },
            P.el('label', { for: id }, f.label), input,
            P.el('label', { class: 'unset' }, P.el('input', { type: 'checkbox',
                id: 'harvest-unset-' + f.field, dataset: { field: f.field } }), ' unset')));
    }
}

async function loadHarvest() {
    buildHarvestForm();
    await loadBlocks();
    await loadInto('harvest-settings-table', async () => {
        const h = await P.api('GET', '/api/v1/harvest');
        const services = Object.keys(h.services || {});
        const rows = HARVEST_FIELDS.map(f => f.field);
        P.fill('harvest-settings-table', P.table(
            [{ title: 'Setting', cell: field => (HARVEST_FIELDS.find(f => f.field === field) || {}).label || field }]
                .concat(services.map(svc => ({
                    title: svc,
                    cell: field => {
                        const v = h.services[svc][field];
                        if (!v)
                            return P.el('span', { class: 'muted' }, 'n/a');
                        return [P.el('span', { class: 'value', id: 'harvest-' + svc + '-' + field,
                            dataset: { source: v.source } }, P.show(v.value)), ' ', src(v.source)];
                    },
                }))), rows, { class: 'harvest' }));
    });
    await loadInto('exempt-table', async () => {
        const e = await P.api('GET', '/api/v1/harvest/exemptions');
        P.fill('exempt-table', P.table([
            { title: 'Network', cell: x => x.network },
            { title: 'Added', cell: x => P.time(x.created_at) },
            { title: '', class: 'actions', cell: x => P.confirmButton('Remove',
                'Remove the exemption of ' + x.network + '?', () => exemptDel(x.network)) },
        ], e.exempt || [], { empty: 'no exempt networks',
            rowProps: x => ({ dataset: { test: 'exempt-row', network: x.network } }) }));
    });
}

async function loadBlocks() {
    await loadInto('blocks-table', async () => {
        const b = await P.api('GET', '/api/v1/harvest/blocks');
        P.fill('blocks-table', P.table([
            { title: 'Address', cell: x => x.network },
            { title: 'Service', cell: x => x.service },
            { title: 'Since', cell: x => P.time(x.since) },
            { title: 'Until', cell: x => P.time(x.until) },
            { title: 'Offense', class: 'num', cell: x => String(x.offense) },
            { title: 'Reason', cell: x => x.reason },
            { title: 'Exempt', cell: x => (x.exempt ? 'yes (not enforced)' : 'no') },
            { title: '', class: 'actions', cell: x => P.el('button', { type: 'button',
                dataset: { test: 'unblock' }, on: { click: () => unblock(x.network) } }, 'Unblock') },
        ], b.blocks || [], { empty: 'no blocks in force',
            rowProps: x => ({ dataset: { test: 'block-row', network: x.network } }) }));
    });
}

async function unblock(network) {
    const r = await P.run(() => P.api('POST', '/api/v1/harvest/unblock', { network }), res => {
        const lifted = (res && res.lifted) || [];
        return 'Unblocked ' + (lifted.length ? lifted.map(x => x.network).join(', ') : network) + '.';
    });
    if (r)
        P.$('unblock-network').value = '';
    loadBlocks();
}

async function harvestSave(values) {
    const body = {};
    for (const f of HARVEST_FIELDS)
        if (values[f.field] !== undefined && values[f.field] !== '')
            body[f.field] = values[f.field];
    if (Object.keys(body).length === 0) {
        P.clearMessages();
        P.say('error', 'Nothing to save: fill in a field first.');
        return;
    }
    if (values.service)
        body.service = values.service;
    const r = await P.run(() => P.api('PUT', '/api/v1/harvest', body), res => 'Harvesting settings ' +
        (res && res.changed === false ? 'unchanged' : 'saved') + ' (' + (values.service || 'system') + ').');
    if (r) {
        P.$('harvest-form').reset();
        loadHarvest();
    }
}

async function harvestUnset() {
    const service = P.$('harvest-service').value;
    const fields = HARVEST_FIELDS.filter(f => P.$('harvest-unset-' + f.field).checked).map(f => f.field);
    if (fields.length === 0) {
        P.clearMessages();
        P.say('error', 'Nothing to unset: tick "unset" beside a field.');
        return;
    }
    const q = '?fields=' + enc(fields.join(',')) + (service ? '&service=' + enc(service) : '');
    const r = await P.run(() => P.api('DELETE', '/api/v1/harvest' + q),
        'Unset ' + fields.join(', ') + ' (' + (service || 'system') + ').');
    if (r) {
        P.$('harvest-form').reset();
        loadHarvest();
    }
}

async function exemptDel(network) {
    await P.run(() => P.api('DELETE', '/api/v1/harvest/exemptions?network=' + enc(network)),
        'Exemption of ' + network + ' removed.');
    loadHarvest();
}

/* ---- alert addresses ------------------------------------------------------------------ */

async function loadAlerts() {
    await loadInto('alerts-table', async () => {
        const a = await P.api('GET', '/api/v1/alert-addresses');
        P.fill('alerts-table', P.table([
            { title: 'Address', cell: x => x.address },
            { title: 'Delivery', cell: x => x.delivery },
            { title: 'Added', cell: x => P.time(x.created_at) },
            { title: '', class: 'actions', cell: x => P.confirmButton('Remove',
                'Stop sending alerts to ' + x.address + '?', () => alertDel(x.address)) },
        ], a.alert_addresses || [], { empty: 'no alert addresses: nobody is told',
            rowProps: x => ({ dataset: { test: 'alert-address-row', address: x.address } }) }));
    });
}

async function alertDel(address) {
    await P.run(() => P.api('DELETE', '/api/v1/alert-addresses/' + enc(address)), address + ' removed.');
    loadAlerts();
}

/* ---- queue ---------------------------------------------------------------------------- */

async function loadQueue() {
    await loadInto('queue-table', async () => {
        const q = await P.api('GET', '/api/v1/queue');
        P.fill('queue-table', P.table([
            { title: 'Queue ID', cell: x => P.el('button', { type: 'button', class: 'link',
                on: { click: () => queueShow(x.queue_id) } }, x.queue_id) },
            { title: 'Sender', cell: x => x.sender || '<>' },
            { title: 'Pending recipients', cell: x => (x.pending_recipients || []).join(', ') },
            { title: 'Pending / delivered / bounced', cell: x => x.pending + ' / ' + x.delivered + ' / ' + x.bounced },
            { title: 'Attempts', class: 'num', cell: x => String(x.attempts) },
            { title: 'Next attempt', cell: x => (x.due ? 'due now' : P.time(x.next_attempt)) },
            { title: 'Age', cell: x => P.duration(x.age_seconds) },
            { title: 'Last reply', cell: x => x.last_reply || (x.cancelled_by ? 'cancelled by ' + x.cancelled_by : null) },
            { title: '', class: 'actions', cell: x => [
                P.el('button', { type: 'button', on: { click: () => queueShow(x.queue_id) } }, 'Show'),
                P.el('button', { type: 'button', on: { click: () => queueRetry(x.queue_id) } }, 'Retry'),
                queueDeleteButton(x.queue_id),
            ] },
        ], q.messages || [], { empty: 'the queue is empty',
            rowProps: x => ({ dataset: { test: 'queue-row', queueId: x.queue_id } }) }));
    });
}

function queueDeleteButton(qid) {
    const b = P.el('button', { type: 'button', class: 'danger' }, 'Delete');
    b.addEventListener('click', () => P.confirm(b, 'Cancel delivery of ' + qid + '?', [
        { label: 'Delete, tell the sender', action: () => queueDelete(qid, false) },
        { label: 'Delete silently', test: 'confirm-silent', action: () => queueDelete(qid, true) },
    ]));
    return b;
}

async function queueShow(qid) {
    const box = P.$('queue-detail');
    box.hidden = false;
    await loadInto(box, async () => {
        const m = await P.api('GET', '/api/v1/queue/' + enc(qid));
        const facts = [
            ['Queue ID', m.queue_id], ['Sender', m.sender || '<>'], ['Created', P.time(m.created_at)],
            ['Age', P.duration(m.age_seconds)], ['Size', m.size + ' bytes'], ['Attempts', m.attempts],
            ['Last attempt', P.time(m.last_attempt)], ['Next attempt', m.due ? 'due now' : P.time(m.next_attempt)],
            ['Lease', m.lease_owner ? m.lease_owner + ' until ' + P.time(m.lease_until) : '—'],
            ['Delay warning sent', P.time(m.warned_at)], ['Cancelled by', P.show(m.cancelled_by)],
            ['Last reply', P.show(m.last_reply)],
        ];
        P.fill(box,
            P.el('h3', null, 'Message ', m.queue_id,
                P.el('button', { type: 'button', class: 'close', on: { click: () => { box.hidden = true; } } }, '×')),
            P.el('dl', { class: 'facts' }, facts.map(([k, v]) => [P.el('dt', null, k), P.el('dd', null, P.show(v))])),
            P.table([
                { title: 'Recipient', cell: r => r.recipient },
                { title: 'State', cell: r => r.state },
                { title: 'Remote', cell: r => r.remote },
                { title: 'Last reply', cell: r => r.last_reply },
                { title: 'Updated', cell: r => P.time(r.updated_at) },
            ], m.recipients || []),
            P.el('h4', null, 'Headers' + (m.headers_truncated ? ' (truncated)' : '')),
            P.el('pre', { class: 'headers' }, Array.isArray(m.headers) ? m.headers.join('\n') : P.show(m.headers)));
    });
}

async function queueRetry(qid) {
    await P.run(() => P.api('POST', qid ? '/api/v1/queue/' + enc(qid) + '/retry' : '/api/v1/queue/retry'),
        res => (qid ? qid + ' will be retried now.' : (res && res.retried !== undefined ? res.retried : 'All') +
            ' message(s) will be retried now.'));
    loadQueue();
}

async function queueDelete(qid, silent) {
    await P.run(() => P.api('DELETE', '/api/v1/queue/' + enc(qid) + (silent ? '?silent=1' : '')),
        qid + ' cancelled' + (silent ? ' silently.' : '; the sender is told.'));
    P.$('queue-detail').hidden = true;
    loadQueue();
}

/* ---- admins --------------------------------------------------------------------------- */

async function loadAdmins() {
    await loadInto('admins-table', async () => {
        const a = await P.api('GET', '/api/v1/admins');
        const list = Array.isArray(a) ? a : (a && a.admins) || [];
        P.fill('admins-table', P.table([
            { title: 'Name', cell: x => x.name },
            { title: 'Role', cell: x => x.role },
            { title: 'Domains', cell: x => (x.role === 'system' ? 'all' : (x.domains || []).join(', ')) },
            { title: 'Created', cell: x => P.time(x.created_at) },
            { title: '', class: 'actions', cell: x => [
                P.el('button', { type: 'button', on: { click: () => askAdminPassword(x.name) } }, 'Password'),
                x.name === App.session.name ? null : P.confirmButton('Delete', 'Delete the administrator ' +
                    x.name + '?', () => adminDel(x.name)),
            ] },
        ], list, { rowProps: x => ({ dataset: { test: 'admin-row', name: x.name } }) }));
    });
}

function askAdminPassword(name) {
    const f = P.$('admin-passwd-form');
    f.dataset.name = name;
    P.$('admin-passwd-name').textContent = name;
    f.hidden = false;
    P.$('admin-passwd-new').value = '';
    P.$('admin-passwd-new').focus();
}

async function adminDel(name) {
    await P.run(() => P.api('DELETE', '/api/v1/admins/' + enc(name)), 'Administrator ' + name + ' deleted.');
    loadAdmins();
}

/* ---- wiring --------------------------------------------------------------------------- */

function wire() {
    P.onUnauthorized(showLogin);
    P.onSubmit('login-form', login);
    P.$('logout').addEventListener('click', logout);
    window.addEventListener('hashchange', route);

    P.onSubmit('domain-add-form', async (v, f) => {
        const r = await P.run(() => P.api('POST', '/api/v1/domains', { name: v.name || '' }),
            'Domain ' + v.name + ' added.');
        if (r) {
            f.reset();
            App.usersDomain = r.name || v.name;
            loadDomains();
        }
    });
    P.onSubmit('user-add-form', addUser);
    P.onSubmit('user-passwd-form', changeUserPassword);
    P.$('user-passwd-cancel').addEventListener('click', () => { P.$('user-passwd-form').hidden = true; });

    P.onSubmit('relay-mode-form', async v => {
        await P.run(() => P.api('PUT', '/api/v1/relay/mode', { mode: v.mode }), 'Relay mode: ' + v.mode + '.');
        loadRelay();
    });
    P.onSubmit('relay-network-form', async (v, f) => {
        const r = await P.run(() => P.api('POST', '/api/v1/relay/networks', { network: v.network || '' }),
            res => (res && res.network ? res.network : v.network) + ' may relay.');
        if (r)
            f.reset();
        loadRelay();
    });
    P.onSubmit('tls-form', async (v, f) => {
        const r = await P.run(() => P.api('PUT', '/api/v1/relay/tls-policies/' + enc(v.domain || ''),
            { policy: v.policy }), 'TLS policy of ' + v.domain + ': ' + v.policy + '.');
        if (r)
            f.reset();
        loadRelay();
    });
    P.onSubmit('transport-form', async (v, f) => {
        const r = await P.run(() => P.api('PUT', '/api/v1/transports/' + enc(v.domain || ''),
            { destination: v.destination || '' }), 'Mail for ' + v.domain + ' goes to ' + v.destination + '.');
        if (r)
            f.reset();
        loadRelay();
    });

    P.$('hamr-domain').addEventListener('change', ev => {
        App.hamr.domain = ev.target.value || null;
        App.hamr.user = null;
        loadHamr();
    });
    P.$('hamr-user').addEventListener('change', ev => {
        App.hamr.user = ev.target.value || null;
        loadInto('hamr-table', renderHamr);
    });
    P.$('hamr-status-refresh').addEventListener('click', loadHamrStatus);

    P.$('blocks-refresh').addEventListener('click', loadBlocks);
    P.onSubmit('unblock-form', v => unblock(v.network || ''));
    P.onSubmit('harvest-form', harvestSave);
    P.$('harvest-unset').addEventListener('click', harvestUnset);
    P.onSubmit('exempt-form', async (v, f) => {
        const r = await P.run(() => P.api('POST', '/api/v1/harvest/exemptions', { network: v.network || '' }),
            res => (res && res.network ? res.network : v.network) + ' is exempt.');
        if (r)
            f.reset();
        loadHarvest();
    });

    P.onSubmit('alert-form', async (v, f) => {
        const r = await P.run(() => P.api('POST', '/api/v1/alert-addresses', { address: v.address || '' }),
            v.address + ' will get the alerts.');
        if (r)
            f.reset();
        loadAlerts();
    });

    P.$('queue-refresh').addEventListener('click', loadQueue);
    P.$('queue-retry-all').addEventListener('click', () => queueRetry(null));

    P.onSubmit('admin-add-form', async (v, f) => {
        const body = { name: v.name || '', role: v.role || 'system', password: v.password || '' };
        if (body.role === 'domain' || v.domains)
            body.domains = v.domains || '';
        const r = await P.run(() => P.api('POST', '/api/v1/admins', body), 'Administrator ' + v.name + ' added.');
        if (r)
            f.reset();
        loadAdmins();
    });
    P.onSubmit('admin-passwd-form', async (v, f) => {
        const name = f.dataset.name;
        const r = await P.run(() => P.api('PUT', '/api/v1/admins/' + enc(name) + '/password',
            { password: v.password || '' }), 'Password of ' + name + ' changed.');
        if (r) {
            f.reset();
            f.hidden = true;
        }
    });
    P.$('admin-passwd-cancel').addEventListener('click', () => { P.$('admin-passwd-form').hidden = true; });
}

async function start() {
    wire();
    try {
        loggedIn(await P.api('GET', '/api/v1/session', undefined, { login: true }));
    } catch (e) {
        showLogin();
        if (e.status !== 401) {
            P.$('login-error').textContent = e.message;
            P.$('login-error').hidden = false;
        }
    }
}

start();
