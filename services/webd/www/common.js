/* Postern's web pages: what the console (app.js) and the self-service page (self/self.js)
 * share. No framework and nothing from outside: the Content-Security-Policy allows scripts,
 * styles and connections to this host only, and no inline code.
 *
 *   P.api(method, path, body)   a JSON request to /api/v1; resolves to the answer, rejects
 *                                with an Error carrying .status and the API's message
 *   P.el(tag, props, ...kids)    builds an element; text is always set as text, never HTML
 *   P.table(columns, rows)       a <table> of rows
 *   P.run(action, done)          runs an API action and reports the outcome in #messages
 *   P.confirm(button, question, choices)  asks inline before a destructive action */
'use strict';

const P = (function () {
    let csrf = '';
    let unauthorized = null;

    class ApiError extends Error {
        constructor(status, message) {
            super(message);
            this.status = status;
        }
    }

    /* The CSRF token every change must send (from the login answer or the session). */
    function setCsrf(token) {
        csrf = token || '';
    }

    /* fn(message) is called on every 401 (the session is gone: show the login form). */
    function onUnauthorized(fn) {
        unauthorized = fn;
    }

    async function api(method, path, body, opts) {
        const init = { method, credentials: 'same-origin', cache: 'no-store', headers: {} };
        if (method !== 'GET' && method !== 'HEAD')
            init.headers['X-CSRF-Token'] = csrf;
        if (body !== undefined) {
            init.headers['Content-Type'] = 'application/json';
            init.body = JSON.stringify(body);
        }
        let resp;
        try {
            resp = await fetch(path, init);
        } catch (e) {
            throw new ApiError(0, 'the server cannot be reached (' + e.message + ')');
        }
        const text = await resp.text();
        let data = null;
        if (text) {
            try {
                data = JSON.parse(text);
            } catch (e) {
                data = null;
            }
        }
        const message = data && typeof data.error === 'string' ? data.error
            : resp.status + ' ' + (resp.statusText || 'error');
        if (resp.status === 401 && !(opts && opts.login)) {
            if (unauthorized)
                unauthorized(message);
            throw new ApiError(401, message);
        }
        if (!resp.ok)
            throw new ApiError(resp.status, message);
        return data;
    }

    /* el('td', {class: 'num', dataset: {test: 'x'}, on: {click: fn}}, 'text', node, ...) */
    function el(tag, props, ...kids) {
        const e = document.createElement(tag);
        for (const [k, v] of Object.entries(props || {})) {
            if (v === undefined || v === null || v === false)
                continue;
            if (k === 'class')
                e.className = v;
            else if (k === 'text')
                e.textContent = v;
            else if (k === 'dataset')
                Object.assign(e.dataset, v);
            else if (k === 'on')
                for (const [ev, fn] of Object.entries(v))
                    e.addEventListener(ev, fn);
            else if (k === 'value' || k === 'checked' || k === 'disabled' || k === 'hidden')
                e[k] = v;
            else
                e.setAttribute(k, v === true ? '' : String(v));
        }
        append(e, kids);
        return e;
    }

    function append(parent, kids) {
        for (const k of kids) {
            if (k === null || k === undefined || k === false)
                continue;
            if (Array.isArray(k))
                append(parent, k);
            else
                parent.appendChild(k instanceof Node ? k : document.createTextNode(String(k)));
        }
    }

    function $(id) {
        return document.getElementById(id);
    }

    /* Replaces what container holds with the nodes. */
    function fill(container, ...nodes) {
        const c = typeof container === 'string' ? $(container) : container;
        c.replaceChildren();
        append(c, nodes);
        return c;
    }

    /* columns: [{title, cell(row) -> text|node, class}]; opts: {empty, rowProps(row)} */
    function table(columns, rows, opts) {
        opts = opts || {};
        const head = el('tr', null, columns.map(c => el('th', { class: c.class }, c.title)));
        const body = el('tbody');
        if (!rows || rows.length === 0) {
            body.appendChild(el('tr', { class: 'empty' },
                el('td', { colspan: columns.length }, opts.empty || 'none')));
        }
        for (const row of rows || []) {
            const tr = el('tr', opts.rowProps ? opts.rowProps(row) : null);
            for (const c of columns) {
                const v = c.cell(row);
                const cls = typeof v === 'string' && /^\d{4}-\d\d-\d\d \d\d:\d\d/.test(v) ? 'time' : c.class;
                tr.appendChild(el('td', { class: cls }, v === null || v === undefined ? '—' : v));
            }
            body.appendChild(tr);
        }
        return el('table', { class: 'grid' + (opts.class ? ' ' + opts.class : '') },
            el('thead', null, head), body);
    }

    /* ---- messages -------------------------------------------------------------------- */

    function clearMessages() {
        const box = $('messages');
        if (box)
            box.replaceChildren();
    }

    /* kind: ok | error | warning */
    function say(kind, text) {
        const box = $('messages');
        if (!box)
            return;
        const close = el('button', { type: 'button', class: 'close', title: 'dismiss',
            'aria-label': 'dismiss' }, '×');
        const m = el('div', { class: 'msg msg-' + kind, role: kind === 'error' ? 'alert' : 'status',
            dataset: { test: 'msg-' + kind } },
        el('span', { class: 'msg-kind' }, kind === 'ok' ? 'Done' : kind === 'error' ? 'Error'
            : 'Warning'), ' ', el('span', { class: 'msg-text' }, text), close);
        close.addEventListener('click', () => m.remove());
        box.appendChild(m);
    }

    /* Runs action (an async function making API calls); reports done (text, or a function
     * of the result) or the error, and any "warning" of the answer. Resolves to the result,
     * or undefined when it failed. */
    async function run(action, done) {
        clearMessages();
        try {
            const result = await action();
            const text = typeof done === 'function' ? done(result) : done;
            if (text)
                say('ok', text);
            if (result && typeof result.warning === 'string' && result.warning)
                say('warning', result.warning);
            return result;
        } catch (e) {
            if (e.status !== 401)
                say('error', e.message);
            return undefined;
        }
    }

    /* Puts an inline question in place of button: choices [{label, test, action, danger}]
     * and Cancel. */
    function confirm(button, question, choices) {
        const holder = button.parentNode;
        const box = el('span', { class: 'confirm', dataset: { test: 'confirm' } },
            el('span', { class: 'confirm-q' }, question));
        const restore = () => {
            box.replaceWith(button);
            button.focus();
        };
        for (const c of choices) {
            box.appendChild(el('button', {
                type: 'button', class: c.danger === false ? '' : 'danger',
                dataset: { test: c.test || 'confirm-yes' },
                on: { click: () => { box.replaceWith(button); c.action(); } },
            }, c.label));
        }
        box.appendChild(el('button', { type: 'button', dataset: { test: 'confirm-no' },
            on: { click: restore } }, 'Cancel'));
        if (holder)
            button.replaceWith(box);
        box.querySelector('button').focus();
    }

    /* A button that asks before doing action: confirmButton(label, question, action). */
    function confirmButton(label, question, action, props) {
        const b = el('button', Object.assign({ type: 'button', class: 'danger' }, props || {}), label);
        b.addEventListener('click', () => confirm(b, question, [{ label: 'Yes, ' + label.toLowerCase(),
            action }]));
        return b;
    }

    /* ---- formatting ------------------------------------------------------------------ */

    function time(s) {
        if (!s)
            return '—';
        return String(s).replace('T', ' ');
    }

    function duration(seconds) {
        let s = Number(seconds) || 0;
        if (s < 60)
            return s + ' s';
        const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600),
            m = Math.floor((s % 3600) / 60);
        if (d)
            return d + ' d ' + h + ' h';
        if (h)
            return h + ' h ' + m + ' min';
        return m + ' min ' + (s % 60) + ' s';
    }

    /* The named controls of a form whose value is not empty, as an object of strings. */
    function formValues(form) {
        const out = {};
        for (const c of form.elements) {
            if (!c.name || c.disabled || c.type === 'submit' || c.type === 'button')
                continue;
            if (c.type === 'checkbox') {
                out[c.name] = c.checked;
                continue;
            }
            const v = c.value.trim ? (c.type === 'password' ? c.value : c.value.trim()) : c.value;
            if (v !== '')
                out[c.name] = v;
        }
        return out;
    }

    /* Binds a form's submit to handler(values, form), preventing the browser's own. */
    function onSubmit(form, handler) {
        const f = typeof form === 'string' ? $(form) : form;
        f.addEventListener('submit', ev => {
            ev.preventDefault();
            handler(formValues(f), f);
        });
    }

    /* A value as shown: booleans and null readable, objects as JSON. */
    function show(v) {
        if (v === null || v === undefined || v === '')
            return '—';
        if (v === true)
            return 'yes';
        if (v === false)
            return 'no';
        if (typeof v === 'object')
            return JSON.stringify(v);
        return String(v);
    }

    return { api, setCsrf, onUnauthorized, el, $, fill, table, say, clearMessages, run,
        confirm, confirmButton, time, duration, formValues, onSubmit, show, ApiError };
})();
