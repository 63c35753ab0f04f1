/* condsim-annot views page: two linked canvas maps, hover/click/drag, self-organising maps.
   Hand-written, no dependencies; inlined into the page. Document text only ever goes through
   textContent / title, never innerHTML. */
(function(){
'use strict';
const D = JSON.parse(document.getElementById('views-data').textContent);
const PAL = ['#4e79a7','#f28e2b','#e15759','#76b7b2','#59a14f','#edc948','#b07aa1','#ff9da7','#9c755f','#bab0ac',
  '#1f77b4','#2ca02c','#d62728','#9467bd','#8c564b','#e377c2','#17becf','#bcbd22','#393b79','#637939'];
const N = D.docs.length, SIZE = 480, PAD = 14;
const tip = document.getElementById('tooltip');
let selected = null, focus = -1;
function colourKey(){ return document.getElementById('colour').value; }
function labelOf(crit, i){
  if (colourKey() === 'field') { const v = D.docs[i].value; return v === null || v === undefined ? '(none)' : v; }
  const c = D.maps[crit].clusters, lab = c.labels[i], nm = c.names[String(lab)];
  return 'cluster ' + lab + (nm && nm.llm ? ': ' + nm.llm : (nm && nm.terms.length ? ': ' + nm.terms.slice(0,3).join(' ') : ''));
}
const palettes = {};
function colourFor(crit, label){
  const key = colourKey() === 'field' ? 'field' : crit;
  let p = palettes[key];
  if (!p) { p = palettes[key] = {}; const counts = {};
    for (let i = 0; i < N; i++) { const l = labelOf(crit, i); counts[l] = (counts[l] || 0) + 1; }
    Object.keys(counts).sort((a, b) => counts[b] - counts[a]).forEach((l, j) => { p[l] = j < PAL.length ? PAL[j] : '#999'; });
  }
  return p[label] || '#999';
}
function Panel(k, crit, space){
  this.k = k; this.canvas = document.getElementById('map-' + k);
  this.critSel = document.getElementById('crit-' + k); this.spaceSel = document.getElementById('space-' + k);
  const dpr = window.devicePixelRatio || 1;
  this.canvas.width = SIZE * dpr; this.canvas.height = SIZE * dpr;
  this.canvas.style.width = SIZE + 'px'; this.canvas.style.height = SIZE + 'px';
  this.ctx = this.canvas.getContext('2d'); this.ctx.scale(dpr, dpr);
  this.critSel.value = crit; this.fillSpaces(space); this.drag = null; this.setup();
}
Panel.prototype.fillSpaces = function(space){
  const spaces = Object.keys(D.maps[this.critSel.value].spaces); this.spaceSel.textContent = '';
  spaces.forEach(s => { const o = document.createElement('option'); o.value = o.textContent = s; this.spaceSel.appendChild(o); });
  this.spaceSel.value = spaces.indexOf(space) >= 0 ? space : spaces[0]; this.load();
};
Panel.prototype.load = function(){
  this.crit = this.critSel.value; this.space = this.spaceSel.value;
  const xy = D.maps[this.crit].spaces[this.space].xy;
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  xy.forEach(p => { x0 = Math.min(x0, p[0]); x1 = Math.max(x1, p[0]); y0 = Math.min(y0, p[1]); y1 = Math.max(y1, p[1]); });
  const s = (SIZE - 2 * PAD) / Math.max(x1 - x0, y1 - y0, 1e-9);
  const ox = (SIZE - 2 * PAD - (x1 - x0) * s) / 2, oy = (SIZE - 2 * PAD - (y1 - y0) * s) / 2;  // centre the short axis
  this.px = xy.map(p => [PAD + ox + (p[0] - x0) * s, SIZE - PAD - oy - (p[1] - y0) * s]);
};
Panel.prototype.draw = function(){
  const c = this.ctx; c.clearRect(0, 0, SIZE, SIZE); c.fillStyle = '#fff'; c.fillRect(0, 0, SIZE, SIZE);
  const r = N > 3000 ? 2 : 3.2;
  for (let pass = 0; pass < 2; pass++) for (let i = 0; i < N; i++) {
    const on = !selected || selected.has(i); if ((pass === 1) !== (!!selected && on)) continue;
    c.globalAlpha = on ? 0.85 : 0.12; c.fillStyle = colourFor(this.crit, labelOf(this.crit, i));
    c.beginPath(); c.arc(this.px[i][0], this.px[i][1], selected && on ? r + 1.3 : r, 0, 6.2832); c.fill();
    if (selected && on) { c.strokeStyle = '#000'; c.lineWidth = 0.8; c.stroke(); }
  }
  c.globalAlpha = 1;
  if (focus >= 0) { c.strokeStyle = '#000'; c.lineWidth = 2; c.beginPath(); c.arc(this.px[focus][0], this.px[focus][1], 8, 0, 6.2832); c.stroke(); }
  if (this.drag && this.drag.moved) { const d = this.drag; c.strokeStyle = '#333'; c.setLineDash([4, 3]);
    c.strokeRect(Math.min(d.x0, d.x1), Math.min(d.y0, d.y1), Math.abs(d.x1 - d.x0), Math.abs(d.y1 - d.y0)); c.setLineDash([]); }
  this.legend();
};
Panel.prototype.legend = function(){
  const el = document.getElementById('legend-' + this.k), counts = {}; el.textContent = '';
  for (let i = 0; i < N; i++) { const l = labelOf(this.crit, i); counts[l] = (counts[l] || 0) + 1; }
  Object.keys(counts).sort((a, b) => counts[b] - counts[a]).slice(0, 20).forEach(l => {
    const s = document.createElement('span'), sw = document.createElement('i'); sw.className = 'sw'; sw.style.background = colourFor(this.crit, l);
    s.appendChild(sw); s.appendChild(document.createTextNode(l + ' (' + counts[l] + ')')); el.appendChild(s); });
};
Panel.prototype.nearest = function(x, y){
  let best = -1, bd = 64;
  for (let i = 0; i < N; i++) { const dx = this.px[i][0] - x, dy = this.px[i][1] - y, d = dx * dx + dy * dy; if (d < bd) { bd = d; best = i; } }
  return best;
};
Panel.prototype.setup = function(){
  const cv = this.canvas, pos = e => { const b = cv.getBoundingClientRect(); return [e.clientX - b.left, e.clientY - b.top]; };
  this.critSel.addEventListener('change', () => { this.fillSpaces(this.space); drawAll(); });
  this.spaceSel.addEventListener('change', () => { this.load(); drawAll(); });
  cv.addEventListener('mousedown', e => { const [x, y] = pos(e); this.drag = {x0: x, y0: y, x1: x, y1: y, moved: false}; });
  cv.addEventListener('mousemove', e => {
    const [x, y] = pos(e);
    if (this.drag) { const d = this.drag; d.x1 = x; d.y1 = y; d.moved = d.moved || Math.abs(x - d.x0) + Math.abs(y - d.y0) > 4; if (d.moved) { this.draw(); return; } }
    const i = this.nearest(x, y);
    if (i < 0) { tip.style.display = 'none'; return; }
    tip.textContent = ''; const b = document.createElement('b'); b.textContent = D.docs[i].id + ' — ' + labelOf(this.crit, i);
    tip.appendChild(b); tip.appendChild(document.createTextNode(D.docs[i].text));
    tip.style.left = Math.min(e.clientX + 14, window.innerWidth - 440) + 'px'; tip.style.top = (e.clientY + 14) + 'px'; tip.style.display = 'block';
  });
  cv.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
  cv.addEventListener('mouseup', e => {
    const d = this.drag; this.drag = null; if (!d) return;
    if (d.moved) { const xa = Math.min(d.x0, d.x1), xb = Math.max(d.x0, d.x1), ya = Math.min(d.y0, d.y1), yb = Math.max(d.y0, d.y1);
      const s = new Set(); for (let i = 0; i < N; i++) { const p = this.px[i]; if (p[0] >= xa && p[0] <= xb && p[1] >= ya && p[1] <= yb) s.add(i); }
      select(s.size ? s : null); return; }
    const i = this.nearest(d.x0, d.y0); if (i >= 0) showNeighbours(i);
  });
};
const panels = [];
function drawAll(){ panels.forEach(p => p.draw()); }
function select(s){ selected = s; document.getElementById('selection').textContent = s ? s.size + ' documents selected (Esc clears)' : ''; drawAll(); }
function showNeighbours(i){
  focus = i; const el = document.getElementById('neighbours'); el.textContent = '';
  const h = document.createElement('h3'); h.textContent = 'Nearest neighbours of ' + D.docs[i].id; el.appendChild(h);
  const p = document.createElement('p'); p.className = 'muted'; p.textContent = D.docs[i].text.slice(0, 300); el.appendChild(p);
  D.criteria.forEach(crit => {
    const h4 = document.createElement('h4'); h4.textContent = 'under ' + crit + ' (embedding)'; el.appendChild(h4);
    const ol = document.createElement('ol'); ol.className = 'nn'; ol.dataset.criterion = crit;
    D.maps[crit].neighbours[i].forEach(j => { const li = document.createElement('li');
      li.textContent = D.docs[j].id + ' — ' + D.docs[j].text.slice(0, 90); li.title = D.docs[j].text;
      li.addEventListener('click', () => showNeighbours(j)); ol.appendChild(li); });
    el.appendChild(ol); });
  drawAll();
}
function som(){
  D.criteria.forEach((crit, k) => {
    const s = D.maps[crit].som, el = document.getElementById('som-' + k); el.textContent = '';
    el.style.gridTemplateColumns = 'repeat(' + s.cols + ', 1fr)';
    const members = s.cells.map(() => []); s.bmu.forEach((c, i) => members[c].push(i));
    s.cells.forEach((cell, ci) => {
      const div = document.createElement('div'); div.className = 'cell';
      if (cell.doc < 0) { div.className += ' empty'; el.appendChild(div); return; }
      const lab = colourKey() === 'field' ? cell.label : labelOf(crit, cell.doc);
      div.style.background = colourFor(crit, lab === null ? '(none)' : lab) + '55';
      const b = document.createElement('i'); b.textContent = cell.n + ' '; div.appendChild(b);
      div.appendChild(document.createTextNode(D.docs[cell.doc].text.slice(0, 90)));
      div.title = D.docs[cell.doc].id + ' (' + cell.n + ' documents): ' + D.docs[cell.doc].text;
      div.addEventListener('mouseenter', () => select(new Set(members[ci])));
      div.addEventListener('click', () => showNeighbours(cell.doc));
      el.appendChild(div); });
  });
}
const c0 = D.criteria[0], c1 = D.criteria.length > 1 ? D.criteria[1] : D.criteria[0];
panels.push(new Panel(0, c0, 'embedding'));
panels.push(new Panel(1, c1, D.criteria.length > 1 ? 'embedding' : 'bm25'));
document.getElementById('colour').addEventListener('change', () => { for (const k in palettes) delete palettes[k]; drawAll(); som(); });
document.addEventListener('keydown', e => { if (e.key === 'Escape') { focus = -1; select(null); } });
drawAll(); som();
window.condsimViews = {
  point: (k, i) => { const b = panels[k].canvas.getBoundingClientRect(); return [b.left + panels[k].px[i][0], b.top + panels[k].px[i][1]]; },
  selected: () => selected ? Array.from(selected).sort((a, b) => a - b) : [], focus: () => focus, n: N,
};
})();
