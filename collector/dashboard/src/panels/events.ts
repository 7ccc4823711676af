// The project's event names in the range (breakdown dimension `event`), as a datalist that
// the funnel builder and the attribution form offer.

import * as api from "../api";
import { h, replace } from "../dom";
import { iso, period, state } from "../state";

export const EVENTS_LIST = "event-names";
let names: string[] = [];
const listeners: ((names: string[]) => void)[] = [];
export const eventNames = (): string[] => names;
export const onEventNames = (fn: (names: string[]) => void): void => { listeners.push(fn); };

export function eventsDatalist(): { el: HTMLElement; load(): Promise<void> } {
  const el = h("datalist", { id: EVENTS_LIST, testid: "event-names" });
  const load = async () => {
    try {
      const r = await api.breakdown(iso(period().cur), "event", 200, state.filters);
      names = r.rows.map((row) => row.value).filter(Boolean);
    } catch {
      names = []; // the pickers still take typed names
    }
    replace(el, names.map((n) => h("option", { value: n })));
    for (const fn of listeners) fn(names);
  };
  return { el, load };
}

export function resetEventNames(): void {
  listeners.length = 0;
}
