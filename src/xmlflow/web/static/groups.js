// Jobs from one zip shown together: under a heading with the zip's name.
//
// An uploaded zip becomes one job per XML member, each with `group` = the zip's name.
// Its cards go into one <li class="job-group" data-group="…"> holding a heading and a
// list of their own, placed where the group's first card shown would be. A card joins
// the group of its name already on the page (cards arrive one by one, in any order, mixed
// with other uploads'), so two uploads of a same-named zip share a heading.

import { $ } from "./dom.js";

/** Put a job's card in `list` (at the top or the bottom), inside its group if it has one. */
export function placeCard(list, cardEl, group, { atTop }) {
  if (!group) {
    if (atTop) list.prepend(cardEl);
    else list.append(cardEl);
    return;
  }
  const box = [...list.children].find(
    (el) => el.classList.contains("job-group") && el.dataset.group === group,
  ) ?? newGroup(list, group, atTop);
  const inner = $(".group-jobs", box);
  if (atTop) inner.prepend(cardEl);
  else inner.append(cardEl);
  $(".group-count", box).textContent = `${inner.children.length} ${inner.children.length === 1 ? "file" : "files"}`;
}

/** Take a card off the page; its group goes too once it holds no card. */
export function removeCard(cardEl) {
  const box = cardEl.closest(".job-group");
  cardEl.remove();
  if (!box) return;
  const left = $(".group-jobs", box).children.length;
  if (left === 0) box.remove();
  else $(".group-count", box).textContent = `${left} ${left === 1 ? "file" : "files"}`;
}

let groups = 0;

function newGroup(list, group, atTop) {
  groups += 1;
  const box = document.createElement("li");
  box.className = "job-group";
  box.dataset.group = group;
  const head = document.createElement("div");
  head.className = "group-head";
  const title = document.createElement("h3");
  title.className = "group-name";
  title.id = `job-group-${groups}`;
  title.textContent = group; // text, never markup: the name comes from the upload
  const count = document.createElement("span");
  count.className = "group-count";
  head.append(title, " ", count);
  const inner = document.createElement("ol");
  inner.className = "job-list group-jobs";
  inner.setAttribute("aria-labelledby", title.id);
  box.append(head, inner);
  if (atTop) list.prepend(box);
  else list.append(box);
  return box;
}
