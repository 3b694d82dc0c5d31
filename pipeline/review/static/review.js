// ideobatch review: the live pages (polling, picks, retries, keys) and the static gallery's filters.
(function () {
  'use strict';
  const body = document.body;
  const live = body.dataset.mode === 'live';
  const notice = document.getElementById('notice');
  let noticeTimer = null;

  function say(text, bad) {
    if (!notice) return;
    notice.textContent = text;
    notice.classList.toggle('bad', !!bad);
    notice.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { notice.hidden = true; }, bad ? 8000 : 3000);
  }

  // An action: a POST with the header the server requires of its own page (no form elsewhere can send it).
  async function act(url, payload) {
    let response;
    try {
      response = await fetch(url, {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', 'X-Ideobatch-Action': '1' },
        body: JSON.stringify(payload),
      });
    } catch (error) {
      say('the server did not answer: ' + error, true);
      return null;
    }
    const text = await response.text();
    if (!response.ok) {
      say(text.trim() || response.statusText, true);
      return null;
    }
    return JSON.parse(text);
  }

  // --- overview: the changing part, fetched again every second
  const panel = document.getElementById('live');
  if (panel && live) {
    const poll = async () => {
      try {
        const response = await fetch(panel.dataset.poll, { credentials: 'same-origin', cache: 'no-store' });
        if (response.ok) panel.innerHTML = await response.text();
      } catch (error) { /* the server restarts: try again next time */ }
      setTimeout(poll, 1000);
    };
    setTimeout(poll, 1000);
  }

  // --- picks
  function showVerdict(element, verdict) {
    element.dataset.verdict = verdict || '';
    element.classList.toggle('picked', verdict === 'picked');
    element.classList.toggle('rejected', verdict === 'rejected');
    const now = element.querySelector('.verdict-now');
    if (now) now.textContent = verdict || 'not judged';
    const data = element.dataset.filter;
    if (data) {
      const parsed = JSON.parse(data);
      parsed.pick = verdict || 'none';
      element.dataset.filter = JSON.stringify(parsed);
    }
  }

  async function judge(element, verdict) {
    if (!live) {
      say('picks are made in `ideobatch serve --allow-actions`', true);
      return;
    }
    const answer = await act('/api/images/' + element.dataset.image + '/pick', { verdict: verdict });
    if (answer) showVerdict(element, answer.verdict);
  }

  const VERDICT_KEYS = { p: 'picked', x: 'rejected', u: null };
  const cards = Array.from(document.querySelectorAll('#grid .card'));
  const detail = document.querySelector('article.detail[data-image]');

  function visibleCards() { return cards.filter((card) => !card.hidden); }

  function move(step) {
    const shown = visibleCards();
    if (!shown.length) return;
    const at = shown.indexOf(document.activeElement);
    const next = at < 0 ? 0 : Math.min(shown.length - 1, Math.max(0, at + step));
    shown[next].focus();
    shown[next].scrollIntoView({ block: 'nearest' });
  }

  document.addEventListener('keydown', (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest && event.target.closest('input, select, textarea, button')) return;
    const key = event.key;
    if (detail) {
      if (key in VERDICT_KEYS) { judge(detail, VERDICT_KEYS[key]); event.preventDefault(); }
      else if (key === 'ArrowLeft' && detail.dataset.prev) window.location.href = detail.dataset.prev;
      else if (key === 'ArrowRight' && detail.dataset.next) window.location.href = detail.dataset.next;
      return;
    }
    if (!cards.length) return;
    if (key === 'ArrowRight' || key === 'j') { move(1); event.preventDefault(); return; }
    if (key === 'ArrowLeft' || key === 'k') { move(-1); event.preventDefault(); return; }
    const focused = document.activeElement && document.activeElement.closest('#grid .card');
    if (!focused) return;
    if (key in VERDICT_KEYS) { judge(focused, VERDICT_KEYS[key]); event.preventDefault(); }
    else if (key === 'Enter') {
      const link = focused.querySelector('a.pic');
      if (link && link.getAttribute('href') !== '#') window.location.href = link.href;
    }
  });

  if (detail) {
    detail.querySelectorAll('button[data-verdict-set]').forEach((button) => {
      button.addEventListener('click', () => judge(detail, button.dataset.verdictSet || null));
    });
  }

  // --- failures: "retry these"
  document.querySelectorAll('button[data-retry]').forEach((button) => {
    button.addEventListener('click', async () => {
      const answer = await act(button.dataset.url, { reason: button.dataset.retry });
      if (answer) {
        say(answer.retried + ' job(s) put back to pending');
        button.disabled = true;
        button.textContent = answer.retried + ' put back to pending';
      }
    });
  });

  // --- filters: the live gallery asks the server; the static file filters its own cards
  const form = document.getElementById('filters');
  if (!form) return;
  if (live) {
    form.querySelectorAll('select').forEach((select) => select.addEventListener('change', () => form.submit()));
    return;
  }
  const shownText = document.getElementById('shown');

  function canonical(text) {
    try { return JSON.stringify(JSON.parse(text)); } catch (error) { return JSON.stringify(text); }
  }

  function matches(data, controls) {
    for (const [name, value] of controls) {
      if (name.startsWith('f.')) {
        const have = Object.prototype.hasOwnProperty.call(data.f, name.slice(2)) ? data.f[name.slice(2)] : 'null';
        if (canonical(have) !== canonical(value)) return false;
      } else if (name === 'prompt' || name === 'enhanced') {
        if (!data[name].includes(value.toLowerCase())) return false;
      } else if (name === 'job') {
        if (!data.job.startsWith(value.toLowerCase())) return false;
      } else if (String(data[name]) !== value) {
        return false;
      }
    }
    return true;
  }

  function apply() {
    const controls = Array.from(new FormData(form).entries())
      .map(([name, value]) => [name, String(value).trim()])
      .filter(([, value]) => value !== '');
    let shown = 0;
    for (const card of cards) {
      const ok = matches(JSON.parse(card.dataset.filter), controls);
      card.hidden = !ok;
      if (ok) shown += 1;
    }
    const op = form.elements.op ? form.elements.op.value : '';
    document.querySelectorAll('#failed tr[data-op]').forEach((row) => { row.hidden = !!op && row.dataset.op !== op; });
    if (shownText) shownText.textContent = shown + ' of ' + cards.length + ' shown';
  }

  form.addEventListener('submit', (event) => { event.preventDefault(); apply(); });
  form.addEventListener('change', apply);
  form.addEventListener('input', apply);
})();
