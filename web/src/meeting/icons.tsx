// Small icons for the controls LiveKit has none for (16 px, currentColor, hidden from assistive
// technology: every button they sit in has a text name).

const base = { xmlns: 'http://www.w3.org/2000/svg', width: 16, height: 16, viewBox: '0 0 16 16', fill: 'currentColor', 'aria-hidden': true } as const;

export function PeopleIcon() {
  return (
    <svg {...base}>
      <circle cx="5.5" cy="4.5" r="2.5" />
      <circle cx="11.5" cy="5.5" r="2" />
      <path d="M0.5 14c0-3 2.2-5 5-5s5 2 5 5z" />
      <path d="M11 14c0-1.8-.6-3.3-1.6-4.3.5-.2 1.1-.3 1.6-.3 2.3 0 4.5 1.6 4.5 4.6z" />
    </svg>
  );
}

export function SpeakerIcon() {
  return (
    <svg {...base}>
      <rect x="1" y="1" width="14" height="9" rx="1" />
      <rect x="1" y="11.5" width="4" height="3.5" rx="0.75" />
      <rect x="6" y="11.5" width="4" height="3.5" rx="0.75" />
      <rect x="11" y="11.5" width="4" height="3.5" rx="0.75" />
    </svg>
  );
}

export function HandIcon() {
  return (
    <svg {...base}>
      <path d="M6 1.5a1 1 0 0 1 2 0V7h.5V2.5a1 1 0 0 1 2 0V7h.5V4a1 1 0 0 1 2 0v6.5c0 2.5-2 4.5-4.5 4.5-1.8 0-3-.8-4-2.2L2.3 9.6a1 1 0 0 1 1.5-1.3L5.5 10V3a.75.75 0 0 1 .5-.7z" />
    </svg>
  );
}

export function StageIcon() {
  return (
    <svg {...base}>
      <circle cx="8" cy="4" r="2.5" />
      <path d="M3.5 11c0-2.3 2-4 4.5-4s4.5 1.7 4.5 4z" />
      <rect x="0.5" y="12" width="15" height="3" rx="1" />
    </svg>
  );
}
