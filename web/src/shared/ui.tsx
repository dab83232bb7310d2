// Small pieces both pages use: the header with the theme switch, the message banner, an error
// boundary that turns a rendering fault into a message, and page-wide handlers for faults that
// escape a component.

import { Component, type ErrorInfo, type ReactNode, useEffect, useState } from 'react';
import { t } from './strings';

type Theme = 'light' | 'dark';

function preferredTheme(): Theme {
  const saved = localStorage.getItem('convene-theme');
  if (saved === 'light' || saved === 'dark') return saved;
  return matchMedia('(prefers-color-scheme: light)').matches ? 'light' : 'dark';
}

/** Light or dark, following the system until the person chooses. */
export function useTheme(): [Theme, () => void] {
  const [theme, setTheme] = useState<Theme>(preferredTheme);
  useEffect(() => {
    document.documentElement.dataset.theme = theme;
  }, [theme]);
  const toggle = () => {
    const next = theme === 'light' ? 'dark' : 'light';
    localStorage.setItem('convene-theme', next);
    setTheme(next);
  };
  return [theme, toggle];
}

export function Header({ title, children }: { title: string; children?: ReactNode }) {
  const [theme, toggle] = useTheme();
  return (
    <header className="cv-header">
      <h1 className="cv-title">{title}</h1>
      <div className="cv-header-tools">
        {children}
        <button type="button" className="lk-button cv-theme" onClick={toggle} aria-label={theme === 'light' ? t.theme.toDark : t.theme.toLight}>
          {theme === 'light' ? '☾' : '☀'}
        </button>
      </div>
    </header>
  );
}

export interface BannerMessage {
  code?: string;
  message: string;
}

/** An error (role alert) or a notice (status), dismissable. */
export function Banner({ error, notice, onDismiss }: { error?: BannerMessage | null; notice?: string | null; onDismiss?: () => void }) {
  if (!error && !notice) return null;
  const message = error ? error.message.charAt(0).toUpperCase() + error.message.slice(1) : '';
  const text = error ? (error.code && error.code !== 'error' ? t.errors.withCode(message, error.code) : message) : notice;
  return (
    <div className={error ? 'cv-banner cv-banner-error' : 'cv-banner cv-banner-notice'} role={error ? 'alert' : 'status'} data-code={error?.code}>
      <span>{text}</span>
      {onDismiss && (
        <button type="button" className="lk-button cv-dismiss" onClick={onDismiss} aria-label={t.close}>
          ×
        </button>
      )}
    </div>
  );
}

/** A fault while rendering shows a message and a way back, never a blank page. */
export class ErrorBoundary extends Component<{ children: ReactNode }, { error: Error | null }> {
  state = { error: null as Error | null };

  static getDerivedStateFromError(error: Error) {
    return { error };
  }

  componentDidCatch(error: Error, info: ErrorInfo) {
    console.error('render failed', error, info.componentStack);
  }

  render() {
    if (this.state.error) {
      return (
        <main className="cv-page">
          <div className="cv-banner cv-banner-error" role="alert">
            {t.errors.unexpected} {this.state.error.message}
          </div>
          <button type="button" className="lk-button" onClick={() => location.reload()}>
            {t.retry}
          </button>
        </main>
      );
    }
    return this.props.children;
  }
}

/** Faults outside React (a rejected promise nobody awaited) reach `report` instead of the console alone. */
export function catchStrayErrors(report: (message: string) => void): void {
  window.addEventListener('unhandledrejection', (event) => {
    event.preventDefault();
    const reason = event.reason as unknown;
    report(reason instanceof Error ? reason.message : String(reason));
  });
  window.addEventListener('error', (event) => {
    if (event.error) report(event.error instanceof Error ? event.error.message : String(event.error));
  });
}

/** Copies text, saying whether it worked. */
export async function copyText(text: string): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}
